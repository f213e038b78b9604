"""Builders shared by the review tests: a store on a fresh registry, and rows to put in it."""

from __future__ import annotations

import re
import socket
import threading
import time
import zlib
from contextlib import contextmanager

import torch

from tunewright.data.schema import ChatRow
from tunewright.registry import Registry
from tunewright.review import NewCandidate, ReviewStore


def chat(question: str, answer: str) -> ChatRow:
    return ChatRow(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}])


def make_store(tmp_path) -> ReviewStore:
    return ReviewStore(Registry(f"sqlite:///{tmp_path / 'registry.db'}"))


def add_round(store: ReviewStore, pairs, *, queue: str = "support", flags=None, generator: str = "self-instruct",
              topic: str | None = "returns", scores=None):
    """One finished round holding ``pairs``; ``flags`` maps row index -> filter name."""
    record = store.open_round(queue, spec_sha256="0" * 64, teacher_model="scripted", guidance={})
    flags = flags or {}
    scores = scores or {}
    new = []
    for i, (q, a) in enumerate(pairs):
        row = chat(q, a)
        if i in scores:
            row = row.model_copy(update={"meta": {"judge": {"score": scores[i], "rationale": "scripted"}}})
        new.append(NewCandidate(row=row, provenance={"generator": generator, "topic": topic, "round": record.number},
                                flags=[{"filter": flags[i], "reason": "scripted"}] if i in flags else []))
    return store.finish_round(record.id, new, usage={"calls": len(pairs)}, filter_counts={}, failures=[],
                              n_generated=len(pairs))


class BagOfWords:
    """A deterministic stand-in for the sentence embedder: unit vectors of hashed word counts."""

    def encode(self, texts):
        out = torch.zeros(len(texts), 256)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % 256] += 1
        return torch.nn.functional.normalize(out, dim=-1)


@contextmanager
def running_app(app):
    """The app on uvicorn on a free loopback port, in a background thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound here and handed over, so no other process can take the port meanwhile
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()
