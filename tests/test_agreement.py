"""Inter-reviewer agreement: kappa against textbook values, and the per-reviewer report."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from itertools import count

import numpy as np
import pytest

from tunewright.review.agreement import agreement_report, cohen_kappa, fleiss_kappa, latest_reviews
from tunewright.review.records import ReviewRecord

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
CHAT = [{"role": "user", "content": "How much is the lamp?"}, {"role": "assistant", "content": "It costs $40."}]
EDITED = [CHAT[0], {"role": "assistant", "content": "It costs $45."}]
_ids = count(1)


def review(item: int, who: str, decision: str, *, rating: int | None = None, seconds: float | None = None,
           after: list | None = None, minutes: int = 0) -> ReviewRecord:
    return ReviewRecord(id=next(_ids), candidate_id=item, reviewer=who, decision=decision, rating=rating,
                        reasons=[] if decision == "accept" else ["wrong_fact"], note="", before=CHAT, after=after,
                        seconds=seconds, created_at=T0 + timedelta(minutes=minutes))


# --- Cohen ----------------------------------------------------------------------------------------


def test_cohen_matches_the_wikipedia_example():
    # 50 proposals: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> po 0.7, pe 0.5, kappa 0.4
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_is_symmetric_and_minus_one_for_systematic_disagreement():
    pairs = [("accept", "reject"), ("reject", "accept")] * 3
    assert cohen_kappa(pairs) == pytest.approx(-1.0)
    flipped = [(b, a) for a, b in [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("a", "a")]]
    assert cohen_kappa(flipped) == pytest.approx(cohen_kappa([(b, a) for a, b in flipped]))


def test_cohen_degenerate_cases():
    assert cohen_kappa([("accept", "accept")] * 5) == 1.0  # one label throughout: agreed on every item
    assert cohen_kappa([("accept", "accept"), ("reject", "reject")]) == 1.0
    assert cohen_kappa([("accept", "reject")]) is None
    assert cohen_kappa([]) is None


# --- Fleiss ---------------------------------------------------------------------------------------

# Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories; kappa 0.210.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_matches_the_wikipedia_example():
    items = [[category for category, n in enumerate(row, 1) for _ in range(n)] for row in WIKIPEDIA_FLEISS]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=5e-5)
    assert round(fleiss_kappa(items), 3) == 0.210


def test_fleiss_with_two_raters_is_scotts_pi():
    # With two raters Fleiss' kappa reduces to Scott's pi, which pools both raters' label shares.
    pairs = [("a", "a")] * 6 + [("a", "b")] * 2 + [("b", "b")] * 2
    shares = {"a": 14 / 20, "b": 6 / 20}
    expected_chance = sum(p * p for p in shares.values())
    pi = (0.8 - expected_chance) / (1 - expected_chance)
    assert fleiss_kappa([list(p) for p in pairs]) == pytest.approx(pi)


def test_fleiss_degenerate_cases():
    assert fleiss_kappa([["accept"] * 3, ["accept"] * 3]) == 1.0
    assert fleiss_kappa([["accept", "reject", "accept"]]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([["accept", "reject"], ["accept", "reject", "accept"]])
    with pytest.raises(ValueError):
        fleiss_kappa([["accept"], ["reject"]])


# --- statsmodels as an independent reference --------------------------------------------------------

# Rows: rater A's label, columns: rater B's; the labels are the row/column order.
COHEN_TABLES = {
    "wikipedia 2x2": (["yes", "no"], [[20, 5], [10, 15]]),
    "three labels, skewed margins": (["accept", "reject", "skip"], [[14, 3, 1], [2, 6, 4], [0, 5, 2]]),
    "worse than chance": (["accept", "reject"], [[2, 9], [11, 3]]),
    # B never says "skip": the label still counts in A's margin and in the expected agreement.
    "a label only one rater used": (["accept", "reject", "skip"], [[9, 2, 0], [1, 7, 0], [3, 1, 0]]),
    "four labels": (list("abcd"), [[5, 1, 0, 2], [0, 7, 2, 0], [1, 1, 6, 1], [2, 0, 0, 4]]),
}


@pytest.mark.parametrize("labels, table", COHEN_TABLES.values(), ids=COHEN_TABLES.keys())
def test_cohen_agrees_with_statsmodels(labels, table):
    from statsmodels.stats.inter_rater import cohens_kappa

    pairs = [(labels[i], labels[j]) for i, row in enumerate(table) for j, n in enumerate(row) for _ in range(n)]
    expected = cohens_kappa(np.array(table)).kappa
    assert cohen_kappa(pairs) == pytest.approx(expected, abs=1e-12)
    assert cohen_kappa([(b, a) for a, b in pairs]) == pytest.approx(expected, abs=1e-12)


# Rows: items, columns: how many raters chose each category; every row sums to the raters per item.
FLEISS_TABLES = {
    "wikipedia, 14 raters": WIKIPEDIA_FLEISS,
    "three reviewers, accept/reject": [[3, 0], [2, 1], [0, 3], [1, 2], [3, 0], [2, 1], [3, 0]],
    "five raters, three labels, a label nobody used": [[4, 1, 0, 0], [0, 5, 0, 0], [2, 2, 1, 0], [1, 1, 3, 0],
                                                       [5, 0, 0, 0], [0, 2, 3, 0]],
    "two raters": [[2, 0], [1, 1], [0, 2], [1, 1], [2, 0]],
}


@pytest.mark.parametrize("table", FLEISS_TABLES.values(), ids=FLEISS_TABLES.keys())
def test_fleiss_agrees_with_statsmodels(table):
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss

    items = [[category for category, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(statsmodels_fleiss(np.array(table), method="fleiss"), abs=1e-12)


def test_fleiss_agrees_with_statsmodels_on_random_panels():
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa as statsmodels_fleiss

    rng = np.random.default_rng(11)
    for raters, categories, n_items in [(3, 2, 20), (4, 3, 15), (6, 5, 30)]:
        # Labels drawn with item-specific preferences, so agreement is above chance but not perfect.
        preference = rng.dirichlet(np.ones(categories) * 0.5, size=n_items)
        ratings = np.array([rng.choice(categories, size=raters, p=p) for p in preference])
        counts, _ = aggregate_raters(ratings, n_cat=categories)
        ours = fleiss_kappa([row.tolist() for row in ratings])
        assert ours == pytest.approx(statsmodels_fleiss(counts, method="fleiss"), abs=1e-12), (raters, categories)


def test_the_report_kappa_agrees_with_statsmodels():
    from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa, fleiss_kappa as statsmodels_fleiss
    from statsmodels.stats.inter_rater import to_table

    rng = np.random.default_rng(5)
    decisions = np.where(rng.random((12, 3)) < [0.7, 0.6, 0.4], "accept", "reject")
    two = [review(i, who, decisions[i, k]) for i in range(12) for k, who in enumerate(("alice", "bob"))]
    table, _ = to_table(np.where(decisions[:, :2] == "accept", 0, 1), bins=[0, 1, 2])
    assert agreement_report(two).kappa == pytest.approx(cohens_kappa(table).kappa, abs=1e-12)
    three = [review(i, who, decisions[i, k]) for i in range(12) for k, who in enumerate(("alice", "bob", "carol"))]
    counts, _ = aggregate_raters(np.where(decisions == "accept", 0, 1), n_cat=2)
    assert agreement_report(three).kappa == pytest.approx(statsmodels_fleiss(counts, method="fleiss"), abs=1e-12)


# --- the report -----------------------------------------------------------------------------------


def test_latest_review_per_reviewer_and_item_wins():
    first = review(1, "bob", "reject", minutes=5)
    changed = review(1, "bob", "accept", minutes=1)  # appended later (higher id) despite an odd clock
    other = review(1, "alice", "accept")
    elsewhere = review(2, "bob", "reject")
    assert latest_reviews([elsewhere, changed, other, first]) == [changed, other, elsewhere]


def test_two_reviewers_use_cohen_on_latest_decisions():
    reviews = [
        review(1, "alice", "accept", rating=5, seconds=10),
        review(1, "bob", "reject", rating=2),
        review(1, "bob", "accept", rating=4, seconds=30),  # bob changed his mind; this one counts
        review(2, "alice", "accept", seconds=20), review(2, "bob", "reject"),
        review(3, "alice", "reject"), review(3, "bob", "reject"),
        review(4, "alice", "reject"), review(4, "bob", "reject"),
        review(5, "alice", "accept"),  # single review: not shared
    ]
    report = agreement_report(reviews)
    # pairs (A,A) (A,R) (R,R) (R,R): po 3/4; alice 2A 2R, bob 1A 3R -> pe 1/2; kappa 0.5
    assert (report.statistic, report.n_items, report.n_raters, report.n_multi_reviewed) == ("cohen", 4, 2, 4)
    assert report.kappa == pytest.approx(0.5)
    alice, bob = report.reviewers
    assert (alice.reviewer, alice.decisions, bob.reviewer, bob.decisions) == ("alice", 5, "bob", 4)
    assert alice.accept_rate == pytest.approx(3 / 5)
    assert bob.accept_rate == pytest.approx(1 / 4)
    assert bob.mean_rating == 4  # the superseded rating of 2 does not count
    assert alice.median_seconds == 15 and bob.median_seconds == 30
    # item 2 is a 1-1 tie and is left out; they agree with the majority on items 1, 3 and 4
    assert (alice.majority_agreement, alice.majority_items) == (1.0, 3)


def test_three_reviewers_use_fleiss_over_the_modal_number_of_raters():
    reviews = [
        review(1, "alice", "accept", seconds=10, rating=5, after=CHAT),  # after == before: not an edit
        review(1, "bob", "accept"), review(1, "carol", "accept"),
        review(2, "alice", "accept", seconds=20, rating=4), review(2, "bob", "accept"),
        review(2, "carol", "reject", after=EDITED),
        review(3, "alice", "reject", seconds=30), review(3, "bob", "reject"), review(3, "carol", "reject"),
        review(4, "alice", "accept", rating=2), review(4, "bob", "reject"),
        review(5, "alice", "accept", seconds=40, rating=3),
    ]
    report = agreement_report(reviews)
    # items 1-3 have three raters (the mode), item 4 two. Pbar 7/9, Pe 41/81 -> kappa 22/40
    assert (report.statistic, report.n_raters, report.n_items, report.n_multi_reviewed) == ("fleiss", 3, 3, 4)
    assert report.kappa == pytest.approx(0.55)
    stats = {s.reviewer: s for s in report.reviewers}
    assert stats["alice"].decisions == 5 and stats["alice"].accept_rate == pytest.approx(0.8)
    assert stats["alice"].median_seconds == 25 and stats["alice"].mean_rating == pytest.approx(3.5)
    assert stats["carol"].median_seconds is None and stats["carol"].mean_rating is None
    assert (stats["alice"].majority_agreement, stats["alice"].majority_items) == (1.0, 3)  # item 4 tied
    assert stats["carol"].majority_agreement == pytest.approx(2 / 3)
    assert (stats["alice"].edits, stats["carol"].edits) == (0, 1)


def test_modal_tie_prefers_more_raters_and_one_item_gives_no_kappa():
    reviews = [review(1, n, "accept") for n in ("alice", "bob", "carol")]
    reviews += [review(2, "alice", "accept"), review(2, "dave", "reject")]
    report = agreement_report(reviews)
    assert (report.statistic, report.n_raters, report.n_items, report.kappa) == ("fleiss", 3, 1, None)


def test_no_shared_items_means_no_statistic():
    report = agreement_report([review(1, "alice", "accept"), review(2, "bob", "reject")])
    assert (report.statistic, report.kappa, report.n_items, report.n_multi_reviewed) == (None, None, 0, 0)
    assert [s.majority_agreement for s in report.reviewers] == [None, None]
    empty = agreement_report([])
    assert empty.reviewers == () and empty.statistic is None


def test_report_to_json_is_plain_json():
    reviews = [review(1, "alice", "accept", seconds=3.5), review(1, "bob", "accept"),
               review(2, "alice", "reject"), review(2, "bob", "accept")]
    data = json.loads(json.dumps(agreement_report(reviews).to_json()))
    assert data["statistic"] == "cohen" and data["n_items"] == 2
    assert data["kappa"] == pytest.approx(0.0)  # po 1/2; alice 1A 1R, bob 2A -> pe 1/2
    assert [r["reviewer"] for r in data["reviewers"]] == ["alice", "bob"]
    assert data["reviewers"][0]["median_seconds"] == 3.5 and data["reviewers"][1]["accept_rate"] == 1.0
