"""What fine-tuning cost the model outside its task: label-free drift (KL) and a retention probe.

**Drift (KL).** Each general prompt is rendered with the model's chat template and its generation
prompt, and the *base* model continues it greedily for up to ``max_new_tokens`` tokens (stopping
after, and keeping, its end-of-turn token). That fixed token sequence, prompt plus continuation, is
teacher-forced through both models, and at every position whose next token belongs to the
continuation (the last prompt token through the second-to-last continuation token, so C positions
for C continuation tokens) we take KL(P_base || P_tuned) over the full vocabulary, in nats. A
prompt's score is the mean over its continuation positions; the headline is the mean over prompts
(median, per-topic means and the highest-scoring prompts are reported too). Prompt positions are
left out: a chat prompt is mostly template and system text, and the user's words are not the
model's to predict. The continuation is what the base model itself would answer, so the KL there
measures how far the tuned model has moved on ordinary requests, token by token, without labels.

Both models see identical, right-padded token ids, so every real token keeps the position it has
unpadded. Prompt-learning adapters add virtual tokens in front (prompt tuning, P-tuning: extra
logits that are dropped) or as attention prefixes (prefix tuning: no extra logits); either way the
logits compared are those of the same real positions. The base side is the same adapter-loaded
model inside peft's ``disable_adapter()``, so only one copy of the weights is held, and only one
batch of full-vocabulary distributions (log-softmaxed on the selected positions) lives at a time.

**Retention.** Probe questions with known answers are asked as one user turn, answered greedily.
A response counts as correct when any accepted answer occurs in it by the customer questions' rule
(``matching.py``): contiguous whole words, case-insensitive, each allowed a plural "s", so "7" is
not found in "17"; whole numbers below 1000 match their English words both ways ("7" accepts
"seven", "twenty-one" accepts "21"). Only the questions the base model gets right are kept, and
only those are put to the tuned model; retention is the share it still gets right (None when the
base got none right).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from statistics import fmean, median
from typing import Any, Callable, Iterator, Sequence

import torch

from ..errors import NotFoundError, TunewrightError
from ..models.generation import generate_ids, pad_id
from ..models.chat import encode_prompt
from ..models.stops import stop_token_ids
from .matching import ARTICLES, answer_matches, tokens

PROMPTS_FILE = "general_prompts.jsonl"
PROBES_FILE = "retention_probes.jsonl"
SUMMARY_KEYS = ("kl", "retention", "n_general_prompts", "n_retention_probes", "n_base_correct", "n_tuned_kept")
TOP_PROMPTS = 10
# Full-vocabulary logits of a whole batch exist twice per step (tuned, then base): cap the batch.
MAX_KL_BATCH = 8

Answerer = Callable[[Any, Sequence[str]], list[str]]


@dataclass(frozen=True)
class GeneralPrompt:
    id: str
    topic: str
    prompt: str


@dataclass(frozen=True)
class RetentionProbe:
    id: str
    question: str
    answers: tuple[str, ...]


# --- the sets --------------------------------------------------------------------------------

def _rows(path: Path, field: str | None) -> Iterator[tuple[int, dict]]:
    from ..data.readers import read_jsonl

    if not path.is_file():
        raise NotFoundError("file not found", file=path, field=field)
    seen = False
    for number, record in read_jsonl(path):
        seen = True
        yield number, record
    if not seen:
        raise TunewrightError("file has no rows", file=path, field=field)


def _text(record: dict, key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if key not in record else f"{type(value).__name__} {value!r}"[:60]
        raise TunewrightError(f"must be a non-empty string (got {got})", file=path, line=line, field=key)
    return value.strip()


def _new_id(record: dict, ids: set[str], path: Path, line: int) -> str:
    value = _text(record, "id", path, line)
    if value in ids:
        raise TunewrightError(f"duplicate id '{value}'", file=path, line=line, field="id")
    ids.add(value)
    return value


def _shipped(name: str) -> Path:
    # The package lives on disk (editable or wheel install), so the resource is a real file.
    return Path(str(resources.files(__package__).joinpath("data", name)))


def load_general_prompts(path: Path | None = None, *, limit: int | None = None,
                         field: str | None = None) -> list[GeneralPrompt]:
    """Rows ``{"id", "prompt", "topic"?}``; the shipped set when ``path`` is None."""
    path = path or _shipped(PROMPTS_FILE)
    prompts, ids = [], set()
    for line, record in _rows(path, field):
        item_id = _new_id(record, ids, path, line)
        topic = _text(record, "topic", path, line) if "topic" in record else "general"
        prompts.append(GeneralPrompt(item_id, topic, _text(record, "prompt", path, line)))
    return prompts[:limit]


def load_retention_probes(path: Path | None = None, *, limit: int | None = None,
                          field: str | None = None) -> list[RetentionProbe]:
    """Rows ``{"id", "question", "answers": [alias, ...]}``; the shipped set when ``path`` is None."""
    path = path or _shipped(PROBES_FILE)
    probes, ids = [], set()
    for line, record in _rows(path, field):
        item_id = _new_id(record, ids, path, line)
        question = _text(record, "question", path, line)
        answers = record.get("answers")
        if not isinstance(answers, list) or not answers:
            got = "missing" if "answers" not in record else f"{type(answers).__name__} {answers!r}"[:60]
            raise TunewrightError(f"must be a non-empty list of accepted answers (got {got})",
                                  file=path, line=line, field="answers")
        aliases = [str(a) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in answers]
        for alias in aliases:
            # An alias with no word ("?"), or only an article ("the"), would be found in nearly every response.
            if not isinstance(alias, str) or set(tokens(alias)) <= ARTICLES:
                raise TunewrightError(f"answer {alias!r} is not text with at least one word besides an article",
                                      file=path, line=line, field="answers")
        probes.append(RetentionProbe(item_id, question, tuple(aliases)))
    return probes[:limit]


def score_retention(probes: Sequence[RetentionProbe], base_answers: Sequence[str],
                    tuned_answers: Sequence[str]) -> dict:
    """Retention over the probes the base answered correctly.

    ``tuned_answers`` holds the tuned model's answers to those probes only, in probe order: the
    tuned model is never asked what the base got wrong.
    """
    kept = [(p, b) for p, b in zip(probes, base_answers, strict=True) if answer_matches(b, p.answers)]
    if len(tuned_answers) != len(kept):
        raise ValueError(f"{len(tuned_answers)} tuned answers for {len(kept)} base-correct probes")
    lost = [{"id": p.id, "question": p.question, "expected": list(p.answers), "base_answer": b, "tuned_answer": t}
            for (p, b), t in zip(kept, tuned_answers) if not answer_matches(t, p.answers)]
    n_kept = len(kept) - len(lost)
    return {"retention": n_kept / len(kept) if kept else None, "n_retention_probes": len(probes),
            "n_base_correct": len(kept), "n_tuned_kept": n_kept, "lost": lost}


# --- drift -----------------------------------------------------------------------------------

def _render(tokenizer, prompt: str) -> list[int]:
    return encode_prompt(tokenizer, [{"role": "user", "content": prompt}])  # as generation.py encodes prompts


@torch.inference_mode()
def greedy_continuations(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
                         on_batch: Callable[[int], None] | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, continuation ids) per prompt: the model's greedy tokens, through its first end-of-turn.

    Token ids rather than decoded text, so the sequence teacher-forced later is exactly what the
    model produced, end-of-turn included (decoding drops it, and re-encoding need not round-trip).
    """
    encoded = [_render(tokenizer, p) for p in prompts]
    stops = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    new = generate_ids(model, encoded, max_new_tokens=max_new_tokens, stop_ids=stops,
                       pad=pad_id(tokenizer), batch_size=batch_size, on_batch=on_batch)
    return list(zip(encoded, new))


def _selected_log_probs(model, ids: torch.Tensor, mask: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits
    # Prompt tuning and P-tuning return logits for their virtual tokens first; the real ones follow.
    logits = logits[:, logits.shape[1] - ids.shape[1] :]
    return torch.log_softmax(logits[select].float(), dim=-1)


@torch.inference_mode()
def continuation_kl(model, sequences: Sequence[tuple[list[int], list[int]]], *,
                    base_context: Callable[[], AbstractContextManager], pad_id: int, batch_size: int,
                    on_batch: Callable[[int], None] | None = None) -> list[float]:
    """Per sequence, mean KL(P_base || P_tuned) in nats over the positions predicting its continuation.

    ``model`` is the tuned model; inside ``base_context()`` the same object must act as the base.
    """
    order = sorted(range(len(sequences)), key=lambda i: sum(map(len, sequences[i])))
    scores = [0.0] * len(sequences)
    batch_size = max(1, min(batch_size, MAX_KL_BATCH))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        width = max(sum(map(len, sequences[i])) for i in index)
        ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        select = torch.zeros_like(ids, dtype=torch.bool)
        for row, i in enumerate(index):  # right-padded: real tokens keep their unpadded positions
            prompt, continuation = sequences[i]
            n = len(prompt) + len(continuation)
            ids[row, :n] = torch.tensor(prompt + continuation)
            mask[row, :n] = 1
            select[row, len(prompt) - 1 : n - 1] = True
        tuned = _selected_log_probs(model, ids, mask, select)
        with base_context():
            base = _selected_log_probs(model, ids, mask, select)
        per_position = (base.exp() * (base - tuned)).sum(-1).clamp_min(0.0)  # rounding can dip below 0
        counts = select.sum(dim=1).tolist()
        for i, chunk in zip(index, per_position.split(counts)):
            scores[i] = float(chunk.mean())
        if on_batch:
            on_batch(len(index))
    return scores


def summarise_kl(prompts: Sequence[GeneralPrompt], scores: Sequence[float], continuations: Sequence[str],
                 top: int = TOP_PROMPTS) -> dict:
    by_topic: dict[str, list[float]] = {}
    for prompt, score in zip(prompts, scores, strict=True):
        by_topic.setdefault(prompt.topic, []).append(score)
    ranked = sorted(range(len(prompts)), key=lambda i: -scores[i])[:top]
    return {
        "kl": fmean(scores),
        "kl_median": median(scores),
        "kl_by_topic": {topic: fmean(values) for topic, values in sorted(by_topic.items())},
        "top_kl": [{"id": prompts[i].id, "topic": prompts[i].topic, "prompt": prompts[i].prompt,
                    "base_continuation": continuations[i], "kl": scores[i]} for i in ranked],
        "n_general_prompts": len(prompts),
    }


# --- the check, in two halves around loading the adapter -------------------------------------

class ForgettingCheck:
    """``observe_base`` on the plain base model, then ``measure_drift`` on the unmerged adapter-loaded
    model and ``measure_retention`` on the tuned model (merged by then, where that is faster).

    The base half generates (probe answers, continuations) before the adapter exists, so no
    generation depends on peft's adapter switching; the drift half needs the base only for
    teacher-forced forward passes, through ``base_context``.
    """

    def __init__(self, prompts: Sequence[GeneralPrompt], probes: Sequence[RetentionProbe], *, max_new_tokens: int,
                 batch_size: int = 16, answer: Answerer | None = None, sources: dict[str, str] | None = None,
                 on_phase: Callable[[str, int], None] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if not prompts:
            raise TunewrightError("no general prompts to measure drift on", field="govern.forgetting.prompts")
        self.prompts, self.probes = list(prompts), list(probes)
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.sources = sources or {}
        self._answer = answer
        self._on_phase, self._on_batch = on_phase, on_batch
        self._tokenizer = None
        self._base_answers: list[str] = []
        self._sequences: list[tuple[list[int], list[int]]] = []
        self._scores: list[float] | None = None
        self._seconds = 0.0

    @classmethod
    def from_workspace(cls, workspace, **kwargs) -> "ForgettingCheck | None":
        """The recipe's sets, read and checked now (before any model loads); None when switched off."""
        spec = workspace.recipe.govern.forgetting
        if not spec.enabled:
            return None
        prompts_path = workspace.path(spec.prompts) if spec.prompts else None
        probes_path = workspace.path(spec.probes) if spec.probes else None
        prompts = load_general_prompts(prompts_path, limit=spec.max_prompts, field="govern.forgetting.prompts")
        probes = load_retention_probes(probes_path, limit=spec.max_probes, field="govern.forgetting.probes")
        sources = {"prompts": str(prompts_path) if prompts_path else f"shipped:{PROMPTS_FILE}",
                   "probes": str(probes_path) if probes_path else f"shipped:{PROBES_FILE}"}
        return cls(prompts, probes, max_new_tokens=spec.max_new_tokens, sources=sources, **kwargs)

    def _phase(self, name: str, total: int) -> None:
        if self._on_phase:
            self._on_phase(name, total)

    def _ask(self, model, questions: Sequence[str]) -> list[str]:
        if not questions:
            return []
        if self._answer is not None:
            return self._answer(model, questions)
        from ..models.generation import generate_responses

        return generate_responses(model, self._tokenizer, [[{"role": "user", "content": q}] for q in questions],
                                  max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                  on_batch=self._on_batch)

    def observe_base(self, model, tokenizer) -> None:
        started = time.perf_counter()
        self._tokenizer = tokenizer
        self._phase("retention probes (base)", len(self.probes))
        self._base_answers = self._ask(model, [p.question for p in self.probes])
        self._phase("general prompts (base continuations)", len(self.prompts))
        self._sequences = greedy_continuations(model, tokenizer, [p.prompt for p in self.prompts],
                                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                               on_batch=self._on_batch)
        self._seconds = time.perf_counter() - started

    def measure_drift(self, tuned, *, base_context: Callable[[], AbstractContextManager]) -> None:
        """KL on the general prompts; ``tuned`` must still be unmerged so ``base_context`` can switch it off."""
        if self._tokenizer is None:
            raise RuntimeError("observe_base must run first")
        started = time.perf_counter()
        self._phase("KL on general prompts", len(self._sequences))
        self._scores = continuation_kl(tuned, self._sequences, base_context=base_context,
                                       pad_id=pad_id(self._tokenizer), batch_size=self.batch_size,
                                       on_batch=self._on_batch)
        self._seconds += time.perf_counter() - started

    def measure_retention(self, tuned) -> dict:
        """Ask the tuned model (merged or not) the base-correct probes; the details for report.json.

        ``summary(details)`` is what the registry stores.
        """
        if self._scores is None:
            raise RuntimeError("measure_drift must run first")
        started = time.perf_counter()
        kept = [p for p, a in zip(self.probes, self._base_answers) if answer_matches(a, p.answers)]
        self._phase("retention probes (tuned)", len(kept))
        tuned_answers = self._ask(tuned, [p.question for p in kept])
        texts = [self._tokenizer.decode(c, skip_special_tokens=True).strip() for _, c in self._sequences]
        details = summarise_kl(self.prompts, self._scores, texts)
        details.update(score_retention(self.probes, self._base_answers, tuned_answers))
        details.update(max_new_tokens=self.max_new_tokens, sources=self.sources,
                       seconds=self._seconds + time.perf_counter() - started)
        return details

    def compare(self, tuned, *, base_context: Callable[[], AbstractContextManager]) -> dict:
        """Both measurements on one unmerged tuned model."""
        self.measure_drift(tuned, base_context=base_context)
        return self.measure_retention(tuned)


def summary(details: dict) -> dict:
    """The few numbers stored with the tuned evaluation (and read by release gates)."""
    return {key: details[key] for key in SUMMARY_KEYS}
