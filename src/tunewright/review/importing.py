"""Bring rows reviewed (or written) elsewhere into the queue, with the decisions they carry."""

from __future__ import annotations

from pathlib import Path

from ..data.schema import ChatRow
from ..io import sha256_file
from .interop import import_items
from .store import NewCandidate, QueueFilter, ReviewStore, messages_sha256


def import_into_queue(workspace, path: str | Path, fmt: str, *, queue: str) -> tuple[int, int]:
    """Items are validated in full before anything is written; decisions are replayed through the
    same store call the web UI uses, so they are audited like any other."""
    items = import_items(Path(path), fmt)
    store = ReviewStore(workspace.registry)
    spec = workspace.recipe.synth
    min_reviews = spec.review.min_reviews if spec is not None else 1
    source = f"{fmt}:{Path(path).name}:{sha256_file(path)[:12]}"
    new = [NewCandidate(row=ChatRow(messages=item.messages, reference=item.reference, meta=item.meta),
                        provenance={**item.meta.get("provenance", {}), "generator": item.meta.get("provenance", {})
                                    .get("generator", "import"), "imported_from": source})
           for item in items]
    added = store.import_candidates(queue, new, source=source)
    by_content = {messages_sha256(c.original): c for c in store.candidates(queue, QueueFilter())}
    already = {(r.candidate_id, r.reviewer) for r in store.reviews(queue)}
    n_decisions = 0
    for item in items:
        candidate = by_content.get(messages_sha256([dict(m) for m in ChatRow(messages=item.messages).to_json()["messages"]]))
        if candidate is None:
            continue
        for decision in item.decisions:
            if (candidate.id, decision.reviewer) in already:
                continue  # importing the same export twice records nothing twice
            store.review(candidate.id, reviewer=decision.reviewer, decision=decision.decision, min_reviews=min_reviews,
                         rating=decision.rating, reasons=decision.reasons, note=decision.note,
                         edited=decision.after_messages)
            already.add((candidate.id, decision.reviewer))
            n_decisions += 1
    return added, n_decisions
