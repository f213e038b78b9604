"""Open-book prompts: retrieved records in the system message, the same layout in training and use.

An open-book adapter is trained on prompts that carry the top-k retrieved chunks, so it must be
asked the same way everywhere it answers (eval, generate, serve, export checks, governance). The
layout and the index it was trained with are recorded in the adapter folder
(``tunewright_retrieval.json``, with a human-readable ``RETRIEVAL.md`` for plain ``peft`` users), and
:class:`Retriever` rebuilds exactly that prompt from a conversation.

Training rows follow RAFT (arXiv 2403.10131): the chunk holding the answer (the oracle) is among the
retrieved distractors in most rows and deliberately missing from the rest, so the model learns both
to read the record it is given and to answer from memory when retrieval fails.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import TunewrightError

CONFIG_FILE = "tunewright_retrieval.json"
README_FILE = "RETRIEVAL.md"
LAYOUT = "records-v1"
# The instruction says what to do when no record helps, so "we don't sell kayaks" stays an answer.
INSTRUCTION = ("Answer the customer's question briefly. These records may help; if none of them answers it, "
               "say so politely.")


def system_message(chunk_texts: Sequence[str]) -> str:
    lines = "\n".join(f"[{i}] {text}" for i, text in enumerate(chunk_texts, start=1))
    return f"{INSTRUCTION}\n\n{lines}"


def with_records(messages: Sequence[dict], chunk_texts: Sequence[str]) -> list[dict]:
    """The conversation with the records as its system message (a system message already there is
    kept after them, so a caller's own instructions still reach the model)."""
    out = [dict(m) for m in messages]
    text = system_message(chunk_texts)
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": f"{text}\n\n{out[0]['content']}"}
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def last_user_text(messages: Sequence[dict]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    raise TunewrightError("a conversation to answer needs a user message", field="messages")


@dataclass(frozen=True)
class RetrievalConfig:
    """What an open-book adapter needs at answer time; stored in its folder.

    The adapter reads from the version of its index built from the sources as they are now:
    rebuilding the index after a price change is how new facts reach a served adapter without
    retraining. The version it was trained with stays on record."""

    index: str  # the index's registry name
    trained_version: str
    index_sha256: str
    k: int
    layout: str = LAYOUT

    def save(self, adapter_dir: Path) -> None:
        from ..io import atomic_write_json, atomic_write_text

        atomic_write_json(adapter_dir / CONFIG_FILE, self.__dict__)
        atomic_write_text(adapter_dir / README_FILE, _readme(self))

    @classmethod
    def read(cls, adapter_dir: Path | None) -> "RetrievalConfig | None":
        from ..models.adapters import read_sidecar

        def build(data: dict) -> "RetrievalConfig":
            return cls(index=data["index"], trained_version=data["trained_version"],
                       index_sha256=data["index_sha256"], k=int(data["k"]), layout=data.get("layout", LAYOUT))

        return read_sidecar(adapter_dir, CONFIG_FILE, what="retrieval config", build=build, layout=LAYOUT)


def _readme(config: RetrievalConfig) -> str:
    example = system_message(["<chunk 1 text>", "<chunk 2 text>", "<chunk 3 text>"][: config.k])
    return (f"# An open-book adapter\n\nThis adapter was trained to answer with retrieved records in its system "
            f"message. Ask it the same way: retrieve the top {config.k} chunks for the user's last message from "
            f"index `{config.index}` as built from the sources now (`tunewright index build` after an edit; "
            f"trained with version {config.trained_version}, "
            f"sha256 `{config.index_sha256}`; hybrid BM25 + MiniLM fused by reciprocal rank; an index with group "
            f"summaries adds the best one after them when it ranks in the top {config.k}, or in the top "
            f"`rank` its record in the index sets) and put them first "
            f"in the system message, exactly like this:\n\n```\n{example}\n```\n\nThen the conversation "
            f"follows as usual with the base model's chat template. Tunewright's eval, generate, serve and "
            f"export commands do this for you.\n")


class Retriever:
    """Adds the records an open-book adapter expects to conversations."""

    def __init__(self, index, config: RetrievalConfig, *, index_ref: str, stale: Sequence[str] = ()) -> None:
        self.index, self.config, self.index_ref, self.stale = index, config, index_ref, list(stale)

    def chunks_for(self, question: str) -> list[str]:
        return [hit.chunk.text for hit in self.index.search(question, self.config.k)]

    def augment(self, messages: Sequence[dict]) -> list[dict]:
        return with_records(messages, self.chunks_for(last_user_text(messages)))

    def prompt_for(self, row) -> list[dict]:
        """A dataset row's prompt as the adapter must see it: an open-book row already carries the
        records it was built with (kept, so a rebuilt index cannot change a held-out row); any other
        row gets records retrieved now."""
        messages = row.prompt_messages
        return messages if row.meta.get("retrieved") else self.augment(messages)


class StaleIndexWarning(UserWarning):
    """The index an adapter reads from was built before its source files last changed."""


_HASHES: dict[tuple[str, int, int], str] = {}
RECENT_S = 3.0


def hash_unless_unchanged(path: Path) -> str:
    """sha256 of a file, read again only when its size or modification time changed: a server asks
    whether the sources changed every second, and re-reading large documents each time would cost
    more than the answer. As in git, a file modified in the last seconds is always read again: on a
    file system with coarse timestamps a second edit of the same size could keep both."""
    import time

    from ..io import sha256_file

    stat = path.stat()
    if time.time() - stat.st_mtime < RECENT_S:
        return sha256_file(path)
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def current_index(workspace, name: str):
    """The registered version of index ``name`` built from the source files as they are now (so
    reverting an edit goes back to the version of that content), else the newest version and the
    names of the files that changed since it was built."""
    from .index import changed_files

    versions = [r for r in workspace.registry.list_indexes() if r.name == name]
    if not versions:
        return workspace.registry.get_index(name), []  # raises, naming the known indexes

    def changed(record) -> list[str]:
        return changed_files(record.source_files, workspace.path, hash_unless_unchanged)

    for record in reversed(versions):
        if not changed(record):
            return record, []
    return versions[-1], changed(versions[-1])


def retriever_for(workspace, adapter_path: Path | None, *, refuse_stale: bool = False) -> Retriever | None:
    """The retriever an adapter folder asks for, or None for a closed-book adapter (and the base).

    Sources edited since the newest index version was built are named in a warning (the answers
    would miss the edit until ``tunewright index build``), or refused with ``refuse_stale`` (an
    export check must prove the files it ships with)."""
    config = RetrievalConfig.read(adapter_path)
    if config is None:
        return None
    from .api import load_workspace_index

    record, stale = current_index(workspace, config.index)
    ref = f"{record.name}@{record.version}"
    index = load_workspace_index(workspace, ref)
    if stale:
        message = (f"index {ref} is older than its sources: {', '.join(stale)} changed since it was built; "
                   f"run 'tunewright index build'")
        if refuse_stale:
            raise TunewrightError(message, field="retrieval")
        import warnings

        warnings.warn(message, StaleIndexWarning, stacklevel=2)
    return Retriever(index, config, index_ref=ref, stale=stale)


def _normal(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def oracle_ids(row, chunks: Sequence) -> set[str]:
    """The chunks that hold a built row's fact: the table row it came from (by file and line), or the
    document chunk of its file whose text contains the row's reference (for a rule's row, its quote).
    Rows about things the sources do not hold (absent items) have none. A fact across rows (the
    cheapest tent, what a category holds) has its group's summary passage when the index has one
    (``retrieval.group_summaries``), else none: putting the winning row in the prompt would teach the
    shortcut "the answer is whichever record is shown", which fails as soon as retrieval shows
    another member of the group.
    Rows without an oracle keep what retrieval returns and are answered from memory."""
    source = (row.meta or {}).get("source") or {}
    file, line = source.get("file"), source.get("line")
    if file is None:
        return set()
    if source.get("across_rows"):
        group = source.get("group")
        return {c.id for c in chunks if group is not None and c.source.get("file") == file
                and c.source.get("group") == group}
    same_file = [c for c in chunks if c.source.get("file") == file]
    if line is not None:
        return {c.id for c in same_file if c.source.get("line") == line}
    # A rule's rows name the policy's own words ("quote"); their references differ by side of the limit.
    reference = _normal(source.get("quote") or row.reference or "")
    return {c.id for c in same_file if reference and reference in _normal(c.text)}


def open_book_row(row, index, *, k: int, rng: random.Random | None, oracle_rate: float, shuffle: bool = False):
    """A built row with its records. ``rng`` None (eval rows): what retrieval returns, untouched.
    Otherwise (training, RAFT): with probability ``oracle_rate`` the oracle is among the k chunks (put
    in at a random place when retrieval missed it), else it is taken out and the next hit fills in.
    A group summary oracle is put in or taken out at the summary's place, after the k chunks; when put
    in, the row the fact names is not among the k. ``shuffle`` (training rows only) puts the k source
    chunks in random order, so the oracle is as often last as first (a summary keeps its place)."""
    question = last_user_text([m.model_dump() for m in row.messages])
    hits = [h.chunk for h in index.search(question, min(k + 4, len(index.chunks))) if not h.chunk.source.get("derived")]
    summary = [h.chunk for h in index.search(question, k) if h.chunk.source.get("derived")]
    oracles = oracle_ids(row, index.chunks)
    chosen = hits[:k]
    placement = "retrieved"
    if rng is not None and oracles and any(c.source.get("derived") for c in index.chunks if c.id in oracles):
        # A group fact's oracle is its summary, which has its own place after the sources. Its
        # winning row is left out beside it: retrieval often shows that row, and an answer copied
        # from it would teach "name a row shown" instead of reading the summary (on lakeline the
        # model then named whichever single plan was shown for "cheapest fiber plan").
        if rng.random() < oracle_rate:
            if not any(c.id in oracles for c in summary):
                summary = [c for c in index.chunks if c.id in oracles][:1]
                placement = "oracle inserted"
            source = row.meta["source"]
            chosen = [c for c in hits if (c.source.get("file"), c.source.get("line")) != (source["file"], source.get("line"))][:k]
        else:
            summary, placement = [], "oracle removed"
    elif rng is not None and oracles:
        if rng.random() < oracle_rate:
            if not any(c.id in oracles for c in chosen):
                oracle = next(c for c in index.chunks if c.id in oracles)
                chosen = chosen[: k - 1]
                chosen.insert(rng.randrange(len(chosen) + 1), oracle)
                placement = "oracle inserted"
        else:
            chosen = [c for c in hits if c.id not in oracles][:k]
            placement = "oracle removed"
    if rng is not None and shuffle:
        chosen = rng.sample(chosen, len(chosen))
    chosen = chosen + summary
    messages = with_records([m.model_dump() for m in row.messages], [c.text for c in chosen])
    meta = {**row.meta, "retrieved": [c.id for c in chosen], "oracle": sorted(oracles), "placement": placement}
    return type(row)(messages=messages, reference=row.reference, meta=meta)


def open_book_rows(rows: Sequence, index, *, k: int, oracle_rate: float, seed: int, shuffle: bool = False) -> list:
    """Every row with its records; training rows (``meta["split"] == "train"``) get the RAFT treatment,
    held-out rows what retrieval returns. Seeded, so a rebuild gives the same dataset version."""
    rng = random.Random(seed)
    return [open_book_row(row, index, k=k, oracle_rate=oracle_rate, shuffle=shuffle,
                          rng=rng if row.meta.get("split") == "train" else None) for row in rows]
