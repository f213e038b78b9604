import pytest

from review_helpers import add_round
from tunewright.errors import NotFoundError, TunewrightError
from tunewright.review import QueueFilter
from tunewright.review.reviewers import add_reviewer, authenticate
from tunewright.review.store import decide

PAIRS = [(f"How long is return window {i}?", f"Returns are accepted within 30 days, case {i}.") for i in range(6)]


def test_round_rows_enter_queue_flagged_rows_marked_not_deleted(store):
    record, added = add_round(store, PAIRS, flags={0: "length"})
    assert added == 6 and record.status == "completed"
    progress = store.progress("support")
    assert progress["pending"] == 5 and progress["flagged"] == 1 and progress["total"] == 6
    flagged = store.candidates("support", QueueFilter(flag="length"))
    assert [c.flags[0]["filter"] for c in flagged] == ["length"]


def test_same_content_is_not_queued_twice(store):
    add_round(store, PAIRS)
    _, added = add_round(store, PAIRS[:2] + [("new question?", "new answer.")])
    assert added == 1


def test_decision_commits_with_before_after_and_event(store):
    add_round(store, PAIRS)
    item = store.candidates("support")[0]
    edited = [item.messages[0], {"role": "assistant", "content": "Returns are accepted within 45 days."}]
    review = store.review(item.id, reviewer="ann", decision="accept", rating=4, edited=edited, seconds=3.5)
    assert review.before == item.messages and review.after == edited and review.edited
    after = store.get(item.id)
    assert after.status == "accepted" and after.messages == edited and after.original == item.messages
    last = store.registry.events(limit=1)[0]
    assert last.action == "review.recorded" and last.actor == "ann" and last.payload["after_sha256"]
    assert store.registry.verify_events() == (True, None)


def test_invalid_edit_records_nothing(store):
    add_round(store, PAIRS)
    item = store.candidates("support")[0]
    with pytest.raises(TunewrightError, match="edited item"):
        store.review(item.id, reviewer="ann", decision="accept",
                     edited=[item.messages[0], {"role": "assistant", "content": "   "}])
    assert store.reviews("support") == [] and store.get(item.id).status == "pending"


@pytest.mark.parametrize("kwargs,match", [
    ({"decision": "maybe"}, "unknown decision"),
    ({"decision": "accept", "rating": 9}, "outside 1-5"),
])
def test_bad_decisions_are_refused(store, kwargs, match):
    add_round(store, PAIRS)
    with pytest.raises(TunewrightError, match=match):
        store.review(store.candidates("support")[0].id, reviewer="ann", **kwargs)


def test_unknown_item_is_not_found(store):
    with pytest.raises(NotFoundError):
        store.review(999, reviewer="ann", decision="accept")


def test_multi_review_is_blind_until_min_reviews_and_majority_decides(store):
    add_round(store, PAIRS[:1])
    item = store.candidates("support")[0]
    edited = [item.messages[0], {"role": "assistant", "content": "Changed by ann."}]
    store.review(item.id, reviewer="ann", decision="accept", edited=edited, min_reviews=2)
    # Not decided after one of two reviews, and bob still sees the original text.
    assert store.get(item.id).status == "pending"
    assert store.todo("support", "bob")[0].messages == item.messages
    assert store.todo("support", "ann") == []
    store.review(item.id, reviewer="bob", decision="accept", min_reviews=2)
    assert store.get(item.id).status == "accepted" and store.get(item.id).messages == edited


def test_a_tie_rejects():
    assert decide(["accept", "reject"], 2) == "rejected"
    assert decide(["accept"], 2) is None
    assert decide(["accept", "accept", "reject"], 3) == "accepted"


def test_a_changed_mind_counts_once_with_the_latest_decision(store):
    from tunewright.review.agreement import agreement_report

    add_round(store, PAIRS[:4])
    items = [c.id for c in store.candidates("support")]
    changed = items[1]
    store.review(changed, reviewer="ann", decision="accept", min_reviews=2)
    store.review(changed, reviewer="ann", decision="reject", min_reviews=2)
    # One reviewer of the two required, however often she decided: counted twice, it would be a
    # 1-1 tie, which rejects.
    assert store.get(changed).status == "pending"
    assert changed not in {c.id for c in store.todo("support", "ann")}
    assert changed in {c.id for c in store.todo("support", "bob")}
    store.review(changed, reviewer="bob", decision="accept", min_reviews=2)
    # ann's latest (reject) against bob's accept is a tie; her first decision, or all three, would accept.
    assert store.get(changed).status == "rejected"

    for item, (ann, bob) in zip([items[0], items[2], items[3]], [("accept", "accept"), ("reject", "reject"),
                                                                ("reject", "reject")]):
        store.review(item, reviewer="ann", decision=ann, min_reviews=2)
        store.review(item, reviewer="bob", decision=bob, min_reviews=2)
    assert len(store.reviews("support", reviewer="ann")) == 5  # the changed decision is kept, append-only
    progress = store.progress("support", reviewer="ann")
    assert (progress["accepted"], progress["rejected"], progress["decided"], progress["mine_done"]) == (1, 3, 4, 4)

    report = agreement_report(store.reviews("support"))
    stats = {s.reviewer: s for s in report.reviewers}
    assert stats["ann"].decisions == 4 and stats["ann"].accept_rate == pytest.approx(1 / 4)
    assert stats["bob"].decisions == 4 and stats["bob"].accept_rate == pytest.approx(2 / 4)
    # Latest pairs (A,A) (R,A) (R,R) (R,R): po 3/4, ann 1A 3R, bob 2A 2R -> pe 1/2, kappa 1/2. ann's
    # first decision instead would make every pair agree (kappa 1).
    assert (report.statistic, report.n_items, report.n_multi_reviewed) == ("cohen", 4, 4)
    assert report.kappa == pytest.approx(0.5)


def test_latest_review_per_reviewer_wins(store):
    add_round(store, PAIRS[:1])
    item = store.candidates("support")[0]
    store.review(item.id, reviewer="ann", decision="reject", reasons=["wrong"])
    assert store.get(item.id).status == "rejected"
    store.review(item.id, reviewer="ann", decision="accept")
    assert store.get(item.id).status == "accepted"
    assert len(store.reviews(candidate_id=item.id)) == 2  # append-only: the first decision is kept


def test_assignment_spreads_items_and_limits_each_reviewers_queue(store):
    add_round(store, PAIRS)
    made = store.assign("support", ["ann", "bob", "cy"], per_item=2)
    assert sum(made.values()) == 12 and max(made.values()) - min(made.values()) <= 1
    for name in ("ann", "bob", "cy"):
        assert len(store.todo("support", name)) == made[name]
    with pytest.raises(TunewrightError, match="only 1 are named"):
        store.assign("support", ["ann"], per_item=2)


def test_bulk_review_by_filter(store):
    add_round(store, PAIRS, scores={0: 5, 1: 5, 2: 2})
    n = store.bulk_review("support", QueueFilter(min_score=4), reviewer="ann", decision="accept")
    assert n == 2
    assert store.progress("support")["accepted"] == 2
    assert len([e for e in store.registry.events() if e.action == "review.recorded"]) == 2


def test_round_summary_reports_acceptance_rate(store):
    add_round(store, PAIRS[:4])
    items = store.candidates("support")
    for item, decision in zip(items, ["accept", "accept", "accept", "reject"]):
        store.review(item.id, reviewer="ann", decision=decision)
    summary = store.round_summaries("support")[0]
    assert summary.n_accepted == 3 and summary.n_rejected == 1 and summary.acceptance_rate == 0.75


def test_failed_round_stays_open_and_is_resumed(store):
    first = store.open_round("support", spec_sha256="0" * 64, teacher_model="m", guidance={"notes": ["x"]})
    store.finish_round(first.id, [], usage={}, filter_counts={}, failures=[{"kind": "timeout"}], n_generated=0)
    again = store.open_round("support", spec_sha256="0" * 64, teacher_model="m", guidance={})
    assert again.id == first.id and again.guidance == {"notes": ["x"]}
    fresh = store.open_round("support", spec_sha256="0" * 64, teacher_model="m", guidance={}, new_round=True)
    assert fresh.number == 2 and store.rounds("support")[0].status == "abandoned"


def test_reviewer_passwords_are_hashed_and_checked(store):
    add_reviewer(store.registry, "ann", "correct horse")
    assert authenticate(store.registry, "ann", "correct horse")
    assert not authenticate(store.registry, "ann", "wrong horse")
    assert not authenticate(store.registry, "nobody", "correct horse")
    payloads = str([e.payload for e in store.registry.events()])
    assert "correct horse" not in payloads and "scrypt" not in payloads
    with pytest.raises(TunewrightError, match="already exists"):
        add_reviewer(store.registry, "ann", "another one")
    with pytest.raises(TunewrightError, match="at least 8"):
        add_reviewer(store.registry, "bob", "short")
    with pytest.raises(TunewrightError, match="reviewer name"):
        add_reviewer(store.registry, "bad name!", "long enough")


def test_bulk_review_touches_only_the_reviewers_own_assignments(store):
    add_round(store, PAIRS)
    store.assign("support", ["ann", "bob"], per_item=1)
    mine = {c.id for c in store.todo("support", "ann")}
    assert store.bulk_review("support", QueueFilter(), reviewer="ann", decision="accept") == len(mine)
    assert {r.candidate_id for r in store.reviews("support")} == mine
