"""Exact and near-duplicate removal; near duplicates by MinHash LSH over word shingles."""

from __future__ import annotations

from typing import ClassVar

from .base import Candidate, Flag, FilterContext, conversation_text, first_question, register_filter, words


def shingles(text: str, size: int = 3) -> set[str]:
    tokens = words(text)
    if len(tokens) < size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


@register_filter
class ExactDuplicates:
    name: ClassVar[str] = "exact-duplicates"

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        seen = {row.content_key(): "an accepted row" for row in context.accepted}
        for candidate in candidates:
            key = candidate.row.content_key()
            if key in seen:
                candidate.flags.append(Flag(self.name, f"same as {seen[key]}"))
            else:
                seen[key] = candidate.id


@register_filter
class NearDuplicates:
    """The field's usual defaults: 128 permutations, Jaccard threshold 0.9 on word 3-grams."""

    name: ClassVar[str] = "near-duplicates"

    def __init__(self, threshold: float = 0.9, num_perm: int = 128, shingle_words: int = 3) -> None:
        self.threshold, self.num_perm, self.shingle_words = threshold, num_perm, shingle_words

    def _minhash(self, text: str):
        from datasketch import MinHash

        signature = MinHash(num_perm=self.num_perm, seed=1)
        for shingle in shingles(text, self.shingle_words):
            signature.update(shingle.encode("utf-8"))
        return signature

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        from datasketch import MinHashLSH

        index = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        for position, row in enumerate(context.accepted):
            index.insert(f"accepted:{position}", self._minhash(conversation_text(row)))
        for candidate in candidates:
            signature = self._minhash(candidate.text())
            matches = index.query(signature)
            if matches:
                other = sorted(matches)[0]
                name = "an accepted row" if other.startswith("accepted:") else other
                candidate.flags.append(Flag(self.name, f"near duplicate (Jaccard >= {self.threshold}) of {name}"))
            else:
                index.insert(candidate.id, signature)


@register_filter
class SemanticDuplicates:
    """Rows that say the same thing in other words: cosine of sentence embeddings above a threshold."""

    name: ClassVar[str] = "semantic-duplicates"

    def __init__(self, threshold: float = 0.95, embedder=None) -> None:
        self.threshold, self._embedder = threshold, embedder

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        if not candidates:
            return
        from ...models.embeddings import default_embedder

        embedder = self._embedder or default_embedder()
        accepted = [conversation_text(r) for r in context.accepted]
        vectors = embedder.encode(accepted + [c.text() for c in candidates])
        kept_rows = list(range(len(accepted)))  # indices into vectors of rows later ones compare against
        names = ["an accepted row"] * len(accepted)
        for offset, candidate in enumerate(candidates):
            row = len(accepted) + offset
            if kept_rows:
                scores = vectors[kept_rows] @ vectors[row]
                best = int(scores.argmax())
                if float(scores[best]) >= self.threshold:
                    candidate.flags.append(
                        Flag(self.name, f"cosine {float(scores[best]):.2f} with {names[best]}")
                    )
                    continue
            kept_rows.append(row)
            names.append(candidate.id)


@register_filter
class Novelty:
    """Self-Instruct's rule: drop a question whose ROUGE-L with any accepted or kept question exceeds 0.7."""

    name: ClassVar[str] = "novelty"

    def __init__(self, max_rouge_l: float = 0.7) -> None:
        from rouge_score import rouge_scorer

        self.max_rouge_l = max_rouge_l
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def apply(self, candidates: list[Candidate], context: FilterContext) -> None:
        pool = [(first_question(r), "an accepted row") for r in context.accepted]
        for candidate in candidates:
            question = candidate.question()
            best, name = 0.0, ""
            for other, other_name in pool:
                score = self._scorer.score(other, question)["rougeL"].fmeasure
                if score > best:
                    best, name = score, other_name
            if best > self.max_rouge_l:
                candidate.flags.append(Flag(self.name, f"ROUGE-L {best:.2f} with {name}"))
            else:
                pool.append((question, candidate.id))
