"""A hybrid index over chunks: BM25 (bm25s) for exact words and codes, MiniLM embeddings for meaning,
fused by reciprocal rank.

Reciprocal-rank fusion (Cormack et al., SIGIR 2009): a chunk scores ``sum 1 / (60 + rank)`` over the
rankings it appears in, each ranking cut at its top ``RRF_DEPTH`` (every chunk of an index smaller
than that). BM25 ranks only chunks that share at least one term with the query: ranking the rest
would order them by nothing. Dense ranks every chunk. Equal scores keep chunk order, so results are
deterministic.

A chunk that holds an identifier the query names ("what does PT-4415 cost"; any word mixing letters
and digits) goes before every chunk that does not, most identifiers first, then by fused rank. In
the fusion alone the exact match lost: BM25 ranked PT-4415's row first, the embeddings fifth, and
two shipping policies that share "cost" with the query and rank high in both lists came first, so
at the demo's k=2 the row was not shown at all. A code names one record; nothing else is evidence
as strong, and a query without identifiers is ranked as before.

A derived passage found by questions (``source["search"]`` a list: a group summary found by the
questions its facts answer) is scored by BM25 on its questions together and by the embeddings on the
best single question. One vector of all of them together blurred members, cheapest and heaviest into
one meaning: "what footwear do you sell?" ranked the footwear summary fourth by embedding, behind the
footwear return policy and both shoes. On the demo's own training and held-out questions, the best
single question brought a summary to the top of the ranking for 145 of 186 questions across rows,
against 120, and for 58 of 502 others, against 42.

On disk (``save``): ``chunks.jsonl``, ``embeddings.safetensors`` and ``manifest.json`` with the
index hash (chunk ids and texts, how a derived passage is found, and the embedder's name: the same
sources give the same hash), the source files and their sha256, the chunking and BM25 settings, each
file's sha256 and ``created_at``. Nothing is pickled; the BM25 index is rebuilt on load (milliseconds for thousands
of chunks).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import torch

from ..errors import NotFoundError, TunewrightError
from ..io import atomic_dir, recover_dir, sha256_file
from .chunks import CHUNKING, Chunk, chunk_file
from .tokens import TOKENIZER_VERSION, identifiers, tokenize

FORMAT = 2  # what this reads; an index is written as 1 unless it has question vectors (below)
RRF_K = 60
RRF_DEPTH = 1000
BM25_SETTINGS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
MANIFEST_FILE = "manifest.json"
CHUNKS_FILE = "chunks.jsonl"
EMBEDDINGS_FILE = "embeddings.safetensors"
_TENSOR = "embeddings"
_QUESTIONS = "questions"  # one vector per question of the passages found by questions, in chunk order


class TextEmbedder(Protocol):
    """What the index needs from an embedder (``models.embeddings.Embedder`` is one)."""

    name: str

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # fused RRF score from ``search``; the BM25 score or cosine from the single-method searches
    bm25_rank: int | None  # 1-based; None: not in that ranking (no shared term, or past the depth)
    dense_rank: int | None


def search_text(chunk: Chunk) -> str:
    """What BM25 sees of a chunk: its text, or for a derived passage what it is to be found by
    (``source["search"]``: a text, or the questions it answers, read together)."""
    found_by = chunk.source.get("search", chunk.text)
    return " ".join(found_by) if isinstance(found_by, list) else found_by


def search_questions(chunk: Chunk) -> list[str]:
    """The questions a derived passage is found by, each embedded on its own; none for other chunks."""
    found_by = chunk.source.get("search")
    return [str(q) for q in found_by] if isinstance(found_by, list) else []


def index_sha256(chunks: Iterable[Chunk], embedder_name: str, stem: bool = False) -> str:
    # How a passage is found is part of it; only present where set, so older indexes keep their hash.
    body = {"embedder": embedder_name, "chunks": [[c.id, c.text, *[{k: c.source[k]} for k in ("search", "rank")
                                                                    if k in c.source]] for c in chunks]}
    if stem:  # only then: an index without stems keeps the version it always had
        body["stem"] = True
    return hashlib.sha256(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()


def _ranking(scores: np.ndarray, keep: np.ndarray | None = None) -> list[int]:
    """Chunk positions by descending score, ties in chunk order; only where ``keep`` is true."""
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))
    return [int(i) for i in order if keep is None or keep[i]]


def _cosines(rows: torch.Tensor, vector: torch.Tensor) -> np.ndarray:
    # Every row through the same reduction, so identical chunks score identically and tie to chunk
    # order (a BLAS matrix-vector product may round rows of one block differently); in blocks, so
    # the temporary stays small.
    return torch.cat([(block * vector).sum(dim=1) for block in rows.split(8192)]).numpy()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Index:
    def __init__(self, chunks: Sequence[Chunk], embeddings: torch.Tensor, *, embedder_name: str,
                 sources: list[dict[str, Any]], created_at: str | None = None,
                 embedder: TextEmbedder | None = None, stem: bool = False,
                 question_embeddings: torch.Tensor | None = None) -> None:
        if not chunks:
            raise TunewrightError("an index needs at least one chunk")
        if embeddings.ndim != 2 or embeddings.shape[0] != len(chunks):
            raise TunewrightError(f"{len(chunks)} chunks but embeddings of shape {tuple(embeddings.shape)}")
        seen: set[str] = set()
        for chunk in chunks:
            if chunk.id in seen:
                raise TunewrightError(f"two chunks share the id '{chunk.id}'", file=chunk.source.get("file"))
            seen.add(chunk.id)
        self.chunks = tuple(chunks)
        self.embeddings = embeddings.detach().to(torch.float32).contiguous()
        self._question_owner = np.array([i for i, c in enumerate(self.chunks) for _ in search_questions(c)],
                                        dtype=np.int64)
        if question_embeddings is not None:
            if tuple(question_embeddings.shape) != (len(self._question_owner), self.embeddings.shape[1]):
                raise TunewrightError(f"{len(self._question_owner)} questions to find passages by, but question "
                                      f"embeddings of shape {tuple(question_embeddings.shape)}")
            question_embeddings = question_embeddings.detach().to(torch.float32).contiguous()
        self._question_embeddings = question_embeddings
        self.embedder_name = embedder_name
        self.sources = [dict(s) for s in sources]
        self.created_at = created_at or _now()
        self.stem = bool(stem)
        self.sha256 = index_sha256(self.chunks, embedder_name, self.stem)
        self._embedder = embedder
        self._bm25 = self._build_bm25()
        self._identifiers = [identifiers(c.text) for c in self.chunks]

    def _build_bm25(self):
        import bm25s

        corpus = [tokenize(search_text(c), stem=self.stem) for c in self.chunks]
        if not any(corpus):
            return None  # only stopwords and punctuation (bm25s cannot index an empty vocabulary)
        bm25 = bm25s.BM25(**BM25_SETTINGS)
        bm25.index(corpus, show_progress=False)
        return bm25

    def __len__(self) -> int:
        return len(self.chunks)

    def __repr__(self) -> str:
        return f"Index({len(self)} chunks, {self.version}, {self.embedder_name})"

    @property
    def version(self) -> str:
        return self.sha256[:12]

    @property
    def embedder(self) -> TextEmbedder:
        if self._embedder is None:
            from ..models.embeddings import default_embedder

            self._embedder = default_embedder()
        if self._embedder.name != self.embedder_name:
            raise TunewrightError(f"this index was embedded with '{self.embedder_name}' but the embedder at hand is "
                                  f"'{self._embedder.name}'; rebuild the index")
        return self._embedder

    # -- scoring -------------------------------------------------------------------------------

    def bm25_scores(self, query: str) -> np.ndarray:
        ids = self._bm25.get_tokens_ids(tokenize(query, stem=self.stem)) if self._bm25 is not None else []
        if not ids:
            return np.zeros(len(self), dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32)

    @property
    def question_embeddings(self) -> torch.Tensor | None:
        """The vectors of ``search_questions`` of every chunk, in chunk order (None: no such chunk).
        Embedded here when the index was built in memory without them."""
        if self._question_embeddings is None and len(self._question_owner):
            questions = [q for c in self.chunks for q in search_questions(c)]
            self._question_embeddings = self.embedder.encode(questions).to(torch.float32).contiguous()
        return self._question_embeddings

    def dense_scores(self, query: str) -> np.ndarray:
        vector = self.embedder.encode([query]).to(torch.float32)[0]
        scores = _cosines(self.embeddings, vector)
        if len(self._question_owner):
            best = np.full(len(self), -np.inf, dtype=np.float32)
            np.maximum.at(best, self._question_owner, _cosines(self.question_embeddings, vector))
            scores = np.where(np.isfinite(best), best, scores)
        return scores

    @staticmethod
    def _check(query: str, k: int) -> None:
        if k < 1:
            raise TunewrightError(f"k must be at least 1 (got {k})", field="k")
        if not query.strip():
            raise TunewrightError("the query is empty", field="query")

    # -- searching -----------------------------------------------------------------------------

    def search_bm25(self, query: str, k: int) -> list[Hit]:
        """The top ``k`` chunks by BM25 alone (only chunks sharing a term with the query); score: BM25."""
        self._check(query, k)
        scores = self.bm25_scores(query)
        ranked = _ranking(scores, scores > 0)[:k]
        return [Hit(self.chunks[i], float(scores[i]), rank, None) for rank, i in enumerate(ranked, start=1)]

    def search_dense(self, query: str, k: int) -> list[Hit]:
        """The top ``k`` chunks by embedding alone; score: cosine similarity."""
        self._check(query, k)
        scores = self.dense_scores(query)
        ranked = _ranking(scores)[:k]
        return [Hit(self.chunks[i], float(scores[i]), None, rank) for rank, i in enumerate(ranked, start=1)]

    def search(self, query: str, k: int) -> list[Hit]:
        """The top ``k`` source chunks by reciprocal-rank fusion of the BM25 and the dense ranking,
        then at most one derived passage (a group summary), when one ranks in the fused top ``k``
        (in the top ``source["rank"]`` when the passage sets it).

        The summary comes after the sources and takes none of their places: it names every member
        of its group, so it matches many questions about one member, and in the ranking it would
        push out the very row those questions need (measured on lakeline: an accepted answer in
        the top 3 fell from 10 to 9 of 10 policy questions when summaries competed for places)."""
        self._check(query, k)
        bm25 = self.bm25_scores(query)
        bm25_order, dense_order = _ranking(bm25, bm25 > 0), _ranking(self.dense_scores(query))
        depth = min(RRF_DEPTH, len(self))
        bm25_rank = {i: r for r, i in enumerate(bm25_order[:depth], start=1)}
        dense_rank = {i: r for r, i in enumerate(dense_order[:depth], start=1)}
        fused = {i: sum(1.0 / (RRF_K + ranks[i]) for ranks in (bm25_rank, dense_rank) if i in ranks)
                 for i in set(bm25_rank) | set(dense_rank)}
        named = identifiers(query)
        order = sorted(fused, key=lambda i: (-len(named & self._identifiers[i]), -fused[i], i))
        sources = [i for i in order if not self.chunks[i].source.get("derived")][:k]
        summary = [i for place, i in enumerate(order[:k]) if self.chunks[i].source.get("derived")
                   and place < self.chunks[i].source.get("rank", k)][:1]
        return [Hit(self.chunks[i], fused[i], bm25_rank.get(i), dense_rank.get(i)) for i in sources + summary]

    # -- on disk -------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {"chunking": CHUNKING, "tokenizer_version": TOKENIZER_VERSION, "stem": self.stem, "bm25": BM25_SETTINGS,
                "rrf": {"k": RRF_K, "depth": RRF_DEPTH}, "identifiers_first": True}

    def manifest(self) -> dict[str, Any]:
        # Format 2 only where there are question vectors: an index without them stays readable by
        # versions that read format 1.
        return {"format": 2 if len(self._question_owner) else 1, "sha256": self.sha256, "version": self.version,
                "embedder": self.embedder_name, "n_chunks": len(self), "dim": int(self.embeddings.shape[1]),
                "sources": self.sources, "settings": self.settings(), "created_at": self.created_at}

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder`` in one rename: a crash leaves the old folder or none."""
        from safetensors.torch import save_file

        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            (tmp / CHUNKS_FILE).write_text(
                "".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in self.chunks), encoding="utf-8")
            tensors = {_TENSOR: self.embeddings}
            if self.question_embeddings is not None:
                tensors[_QUESTIONS] = self.question_embeddings
            save_file(tensors, str(tmp / EMBEDDINGS_FILE),
                      metadata={"embedder": self.embedder_name, "sha256": self.sha256})
            manifest = self.manifest()
            manifest["files"] = {name: sha256_file(tmp / name) for name in (CHUNKS_FILE, EMBEDDINGS_FILE)}
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, embedder: TextEmbedder | None = None) -> "Index":
        """Read a saved index, checking every file against the manifest; one error names the first bad file."""
        folder = recover_dir(folder)  # a replacement cut short by a crash leaves the previous folder beside it
        if not folder.is_dir():
            raise NotFoundError("index folder not found", file=folder)
        manifest = _read_manifest(folder / MANIFEST_FILE)
        for name in (CHUNKS_FILE, EMBEDDINGS_FILE):
            path = folder / name
            if not path.is_file():
                raise TunewrightError("index file is missing", file=path)
            if sha256_file(path) != manifest["files"][name]:
                raise TunewrightError("index file is damaged: its sha256 differs from the manifest's; rebuild the "
                                      "index ('tunewright index build')", file=path)
        chunks = _read_chunks(folder / CHUNKS_FILE)
        tensors = _read_embeddings(folder / EMBEDDINGS_FILE)
        embeddings = tensors[_TENSOR]
        if embeddings.shape != (len(chunks), manifest["dim"]) or len(chunks) != manifest["n_chunks"]:
            raise TunewrightError(f"{len(chunks)} chunks and embeddings of shape {tuple(embeddings.shape)} do not "
                                  f"match the manifest's {manifest['n_chunks']} x {manifest['dim']}",
                                  file=folder / MANIFEST_FILE)
        stem = bool((manifest.get("settings") or {}).get("stem", False))
        asked = sum(len(search_questions(c)) for c in chunks)
        questions = tensors.get(_QUESTIONS)
        if (questions is None and asked) or (questions is not None
                                             and tuple(questions.shape) != (asked, embeddings.shape[1])):
            raise TunewrightError(f"{asked} questions to find passages by, but question embeddings of shape "
                                  f"{None if questions is None else tuple(questions.shape)}; rebuild the index",
                                  file=folder / EMBEDDINGS_FILE)
        index = cls(chunks, embeddings, embedder_name=manifest["embedder"], sources=manifest["sources"],
                    created_at=manifest["created_at"], embedder=embedder, stem=stem, question_embeddings=questions)
        if index.sha256 != manifest["sha256"]:
            raise TunewrightError(f"the chunks hash to {index.sha256[:12]}, not the manifest's "
                                  f"{str(manifest['sha256'])[:12]}", file=folder / MANIFEST_FILE, field="sha256")
        return index


_MANIFEST_KEYS = {"format": int, "sha256": str, "embedder": str, "n_chunks": int, "dim": int, "sources": list,
                  "created_at": str, "files": dict}


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TunewrightError("index file is missing", file=path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TunewrightError(f"index manifest is damaged: {getattr(exc, 'msg', exc)}", file=path,
                              line=getattr(exc, "lineno", None)) from None
    if not isinstance(manifest, dict):
        raise TunewrightError("index manifest is damaged: not a JSON object", file=path)
    for key, kind in _MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise TunewrightError(f"index manifest is damaged: missing or not a {kind.__name__}", file=path, field=key)
    if manifest["format"] > FORMAT:
        raise TunewrightError(f"index format {manifest['format']} is newer than this tunewright reads ({FORMAT})",
                              file=path, field="format")
    for name in (CHUNKS_FILE, EMBEDDINGS_FILE):
        if not isinstance(manifest["files"].get(name), str):
            raise TunewrightError(f"index manifest is damaged: no sha256 for {name}", file=path, field="files")
    return manifest


def _read_chunks(path: Path) -> list[Chunk]:
    chunks = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
            chunks.append(Chunk(str(record["id"]), str(record["text"]), dict(record["source"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise TunewrightError("index file is damaged: not a chunk record", file=path, line=number) from None
    return chunks


def _read_embeddings(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a truncated or foreign file
        raise TunewrightError(f"index file is damaged: {exc}", file=path) from None
    if _TENSOR not in tensors:
        raise TunewrightError(f"index file is damaged: no '{_TENSOR}' tensor", file=path)
    return tensors


def build_index(paths: Sequence[str | Path], *, root: str | Path | None = None,
                embedder: TextEmbedder | None = None, stem: bool = False,
                derived: dict[str | Path, Sequence[Chunk]] | None = None) -> Index:
    """Chunk each source by its suffix (.csv: table; .md/.markdown/.txt: document), embed, index.

    A relative path is read under ``root`` when given and recorded as written, so a workspace's index
    names its sources the way the recipe does. Two sources with the same file name are refused:
    their chunk ids would collide. ``derived``: passages a caller composed (group summaries), keyed
    by the file whose settings shaped them; that file is recorded as a source, so editing it makes
    the index stale like editing a table."""
    if not paths:
        raise TunewrightError("no sources to index")
    chunks: list[Chunk] = []
    sources: list[dict[str, Any]] = []
    names: dict[str, Path] = {}
    def resolve(given: str | Path) -> tuple[Path, Path]:
        given = Path(given)
        return given, Path(root) / given if root is not None and not given.is_absolute() else given

    def source(given: Path, path: Path, count: int) -> dict[str, Any]:
        return {"file": path.name, "path": str(given), "sha256": sha256_file(path), "chunks": count}

    for given, path in map(resolve, paths):
        if path.name in names:
            raise TunewrightError(f"two sources are named '{path.name}' (also {names[path.name]}); chunk ids would "
                                  "collide: rename one", file=path)
        names[path.name] = path
        found = chunk_file(path)
        chunks.extend(found)
        sources.append(source(given, path, len(found)))
    for (given, path), passages in ((resolve(g), p) for g, p in (derived or {}).items()):
        chunks.extend(passages)
        sources.append(source(given, path, len(passages)))
    if embedder is None:
        from ..models.embeddings import default_embedder

        embedder = default_embedder()
    embeddings = embedder.encode([search_text(c) for c in chunks])
    questions = [q for c in chunks for q in search_questions(c)]
    return Index(chunks, embeddings, embedder_name=embedder.name, sources=sources, embedder=embedder, stem=stem,
                 question_embeddings=embedder.encode(questions) if questions else None)


def changed_sources(index: Index, resolve: Callable[[str], Path] = Path) -> list[str]:
    """Names of the index's source files that are missing or whose sha256 changed since it was built.

    ``resolve`` turns a source's recorded path (as given to ``build_index``) into a file to hash."""
    return changed_files(index.sources, resolve)


def changed_files(sources: Sequence[dict[str, Any]], resolve: Callable[[str], Path] = Path,
                  hash_file: Callable[[Path], str] = sha256_file) -> list[str]:
    """Names of the recorded ``sources`` ({"file", "path", "sha256"}) whose file is missing or changed;
    ``hash_file`` lets a caller that checks several versions hash each file once."""
    changed = []
    for source in sources:
        path = Path(resolve(source["path"]))
        if not path.is_file() or hash_file(path) != source["sha256"]:
            changed.append(source["file"])
    return changed
