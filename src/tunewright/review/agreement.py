"""How far reviewers agree, and how each reviewer decides: pure functions over review records.

Only each reviewer's latest decision on an item counts; earlier ones were changed minds. Kappa is
computed exactly with fractions so the degenerate case (expected agreement of exactly 1) is
detected without floating-point tolerance guesses.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Hashable, Iterable, Sequence

from .records import ReviewRecord


def cohen_kappa(pairs: Iterable[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa for two raters; ``pairs`` holds (rater A's label, rater B's label) per item.

    Returns None for fewer than two items: one item cannot separate agreement from chance. When both
    raters used one and the same label throughout, expected agreement is 1 and kappa is 0/0; we
    return 1.0 because the raters agreed on every item, which is what a reader of the report wants
    to learn (scikit-learn would return nan there).
    """
    pairs = list(pairs)
    n = len(pairs)
    if n < 2:
        return None
    observed = Fraction(sum(a == b for a, b in pairs), n)
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum((Fraction(first[k] * second[k], n * n) for k in first), Fraction(0))
    if expected == 1:
        return 1.0
    return float((observed - expected) / (1 - expected))


def fleiss_kappa(items: Iterable[Sequence[Hashable]]) -> float | None:
    """Fleiss' kappa; ``items`` holds, per item, the labels its raters gave (same count n >= 2 each).

    The raters need not be the same people on every item, only the same number. Fewer than two
    items gives None; a single label used by everyone gives 1.0, as in ``cohen_kappa``.
    """
    items = [list(labels) for labels in items]
    if len(items) < 2:
        return None
    n = len(items[0])
    if n < 2 or any(len(labels) != n for labels in items):
        raise ValueError("fleiss_kappa needs the same number (at least 2) of ratings on every item")
    totals: Counter = Counter()
    observed = Fraction(0)
    for labels in items:
        counts = Counter(labels)
        totals.update(counts)
        observed += Fraction(sum(c * c for c in counts.values()) - n, n * (n - 1))
    observed /= len(items)
    ratings = len(items) * n
    expected = sum((Fraction(t, ratings) ** 2 for t in totals.values()), Fraction(0))
    if expected == 1:
        return 1.0
    return float((observed - expected) / (1 - expected))


def latest_reviews(reviews: Iterable[ReviewRecord]) -> list[ReviewRecord]:
    """Each reviewer's latest decision per item, in id order.

    Reviews are append-only, so the highest id is the latest, as in the store; ids cannot run
    backwards the way clocks on different machines can.
    """
    latest: dict[tuple[int, str], ReviewRecord] = {}
    for review in sorted(reviews, key=lambda r: r.id):
        latest[(review.candidate_id, review.reviewer)] = review
    return sorted(latest.values(), key=lambda r: r.id)


@dataclass(frozen=True)
class ReviewerStats:
    reviewer: str
    decisions: int  # items this reviewer decided (latest decision per item)
    accept_rate: float | None
    median_seconds: float | None
    mean_rating: float | None
    majority_agreement: float | None  # share of counted items where they voted with the majority
    majority_items: int  # multi-reviewed items with a clear majority that this share is over
    edits: int


@dataclass(frozen=True)
class AgreementReport:
    statistic: str | None  # "cohen", "fleiss", or None when no item has two reviews
    kappa: float | None  # None when fewer than two items qualify
    n_items: int  # items the kappa is computed over
    n_raters: int | None  # ratings per item in those items
    n_multi_reviewed: int  # items with at least two reviewers' decisions
    reviewers: tuple[ReviewerStats, ...]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["reviewers"] = [asdict(s) for s in self.reviewers]
        return out


def agreement_report(reviews: Iterable[ReviewRecord]) -> AgreementReport:
    """Kappa over items reviewed by two or more people, plus per-reviewer statistics.

    With exactly two reviewers across all shared items the statistic is Cohen's kappa. Otherwise it
    is Fleiss' kappa over the items carrying the most common number of ratings (ties go to the
    larger number); Fleiss needs the same count on every item, and the modal count keeps the most
    items.
    """
    latest = latest_reviews(reviews)
    by_item: dict[int, dict[str, ReviewRecord]] = defaultdict(dict)
    for review in latest:
        by_item[review.candidate_id][review.reviewer] = review
    shared = {cid: votes for cid, votes in by_item.items() if len(votes) >= 2}
    statistic, kappa, n_items, n_raters = _kappa(shared)
    names = sorted({r.reviewer for r in latest})
    stats = tuple(_reviewer_stats(name, [r for r in latest if r.reviewer == name], shared) for name in names)
    return AgreementReport(statistic, kappa, n_items, n_raters, len(shared), stats)


def _kappa(shared: dict[int, dict[str, ReviewRecord]]) -> tuple[str | None, float | None, int, int | None]:
    if not shared:
        return None, None, 0, None
    raters = sorted({name for votes in shared.values() for name in votes})
    if len(raters) == 2:
        a, b = raters
        pairs = [(votes[a].decision, votes[b].decision) for votes in shared.values()]
        return "cohen", cohen_kappa(pairs), len(pairs), 2
    sizes = Counter(len(votes) for votes in shared.values())
    modal = max(sizes, key=lambda size: (sizes[size], size))
    items = [[r.decision for r in votes.values()] for votes in shared.values() if len(votes) == modal]
    return "fleiss", fleiss_kappa(items), len(items), modal


def _reviewer_stats(name: str, mine: list[ReviewRecord], shared: dict[int, dict[str, ReviewRecord]]) -> ReviewerStats:
    seconds = [r.seconds for r in mine if r.seconds is not None]
    ratings = [r.rating for r in mine if r.rating is not None]
    agree = counted = 0
    for votes in shared.values():
        if name not in votes:
            continue
        # The reviewer's own vote is part of the majority, as in "share of decisions equal to the
        # majority label"; with two reviewers a disagreement is a tie and is left out.
        (top, top_n), *rest = Counter(r.decision for r in votes.values()).most_common()
        if rest and rest[0][1] == top_n:
            continue
        counted += 1
        agree += votes[name].decision == top
    return ReviewerStats(
        reviewer=name,
        decisions=len(mine),
        accept_rate=sum(r.decision == "accept" for r in mine) / len(mine) if mine else None,
        median_seconds=statistics.median(seconds) if seconds else None,
        mean_rating=statistics.fmean(ratings) if ratings else None,
        majority_agreement=agree / counted if counted else None,
        majority_items=counted,
        edits=sum(r.edited for r in mine),
    )
