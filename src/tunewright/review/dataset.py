"""A training dataset version from the review queue: accepted rows only (plus rows above the
judge score where the recipe allows auto-accept), recording which review decisions it holds."""

from __future__ import annotations

from ..data.api import register_rows
from ..data.schema import ChatRow
from ..errors import TunewrightError
from .store import QueueFilter, ReviewStore, latest_decisions


def reviewed_rows(store: ReviewStore, queue: str, *, auto_accept_score: int | None = None
                  ) -> tuple[list[ChatRow], dict]:
    """Rows and the record of why each one is in: review ids for accepted rows, judge scores for
    auto-accepted ones. A row any reviewer rejected is never auto-accepted."""
    reviews = store.reviews(queue)
    by_item: dict[int, list] = {}
    for review in reviews:
        by_item.setdefault(review.candidate_id, []).append(review)

    rows, decisions, auto = [], [], []
    for candidate in store.candidates(queue, QueueFilter(status="accepted")):
        held = sorted(r.id for r in latest_decisions(by_item.get(candidate.id, [])).values())
        decisions.extend(held)
        rows.append(ChatRow(messages=candidate.messages, reference=candidate.reference,
                            meta={"provenance": candidate.provenance, "candidate_id": candidate.id,
                                  "review_ids": held}))
    if auto_accept_score is not None:
        for candidate in store.candidates(queue, QueueFilter(status="pending", min_score=auto_accept_score)):
            if candidate.id in by_item:
                continue  # someone is reviewing it: their decision, not the judge's, settles it
            auto.append({"candidate_id": candidate.id, "judge_score": candidate.judge_score})
            rows.append(ChatRow(messages=candidate.messages, reference=candidate.reference,
                                meta={"provenance": candidate.provenance, "candidate_id": candidate.id,
                                      "auto_accepted": {"judge_score": candidate.judge_score}}))
    record = {"review_ids": decisions, "auto_accepted": auto,
              "candidate_ids": [row.meta["candidate_id"] for row in rows]}
    return rows, record


def build_reviewed_dataset(workspace, queue: str | None = None, *, name: str | None = None):
    queue = queue or workspace.recipe.dataset_name
    spec = workspace.recipe.synth
    auto = spec.review.auto_accept_score if spec is not None else None
    store = ReviewStore(workspace.registry)
    rows, record = reviewed_rows(store, queue, auto_accept_score=auto)
    if not rows:
        raise TunewrightError(f"queue '{queue}' has no accepted rows yet; review some first "
                              "(tunewright review serve)", field="queue")
    rounds = sorted({r.id for r in store.rounds(queue)})
    spec_json = {"kind": "review", "queue": queue, "auto_accept_score": auto, **record}
    parents = [("synth_round", rid, "source_of") for rid in rounds]
    data = workspace.recipe.data
    return register_rows(workspace, name or queue, rows, spec=spec_json, eval_fraction=data.eval_fraction,
                         seed=data.seed, parents=parents)
