"""Data scan: how often each group of the bias attributes appears in the training data, and whether
reviewers accepted rows about one group more readily than rows about another.

Group terms come from the bias test's attributes file, without a leading article or possessive
("a woman" -> "woman"), matched as whole words, case-insensitively, with a plural ("women",
"Christians"); the gender groups ``female`` and ``male`` also match she/her/hers/herself and
he/him/his/himself. A row counts once per group it mentions (a row can mention several groups).

Two flags, each per attribute:

* mention skew: at least ``MIN_MENTIONS`` group mentions, a chi-square goodness-of-fit test against
  equal shares with p < ``ALPHA``, and a group far from its even share (above 1.5x or below 0.5x);
* review skew: among accepted and rejected review items, acceptance rates differ by group (chi-square
  test of independence over the groups with at least ``MIN_DECIDED`` decided items, p < ``ALPHA``)
  by at least ``MIN_RATE_GAP``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

from .bias import core_term

MIN_MENTIONS = 20
MIN_DECIDED = 5
ALPHA = 0.01
HIGH_SHARE, LOW_SHARE = 1.5, 0.5  # multiples of the even share that count as far from it
MIN_RATE_GAP = 0.15
IRREGULAR_PLURALS = {"woman": "women", "man": "men", "person": "people", "child": "children", "wife": "wives"}
GENDER_PRONOUNS = {"female": ("she", "her", "hers", "herself"), "male": ("he", "him", "his", "himself")}


def _phrase(term: str) -> str:
    *head, last = [re.escape(w) for w in core_term(term).split()]
    plural = IRREGULAR_PLURALS.get(last.lower())
    tail = f"(?:{last}|{plural})" if plural else f"{last}(?:s|es)?"
    return r"\s+".join([*head, tail])


def group_patterns(attributes: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, re.Pattern]]:
    """One whole-word, case-insensitive pattern per group; longer phrases first so that "devout
    Christian" is one mention, not two."""
    patterns: dict[str, dict[str, re.Pattern]] = {}
    for attribute, groups in attributes.items():
        patterns[attribute] = {}
        for group, terms in groups.items():
            phrases = {_phrase(t) for t in terms}
            if attribute == "gender":
                phrases.update(GENDER_PRONOUNS.get(group, ()))
            alternatives = "|".join(sorted(phrases, key=lambda p: (-len(p), p)))
            patterns[attribute][group] = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)
    return patterns


def mentions(texts: Sequence[str], patterns: dict[str, dict[str, re.Pattern]]) -> dict[str, np.ndarray]:
    """Per attribute, a (texts x groups) 0/1 matrix: does the text mention the group?"""
    return {attribute: np.array([[bool(p.search(text)) for p in groups.values()] for text in texts],
                                dtype=int).reshape(len(texts), len(groups))
            for attribute, groups in patterns.items()}


def mention_skew(hits: np.ndarray, groups: Sequence[str]) -> dict:
    counts = hits.sum(axis=0)
    total = int(counts.sum())
    shares = counts / total if total else np.zeros(len(groups))
    even = 1 / len(groups)
    p_value = float(scipy_stats.chisquare(counts).pvalue) if total else 1.0
    far = [g for g, s in zip(groups, shares) if s >= HIGH_SHARE * even or s <= LOW_SHARE * even]
    skewed = total >= MIN_MENTIONS and p_value < ALPHA and bool(far)
    return {"groups": {g: {"rows": int(c), "share": round(float(s), 4)} for g, c, s in zip(groups, counts, shares)},
            "mentions": total, "p_value": p_value, "skewed": skewed, "far_from_even": far if skewed else []}


def review_skew(accepted: np.ndarray, rejected: np.ndarray, groups: Sequence[str]) -> dict:
    acc, rej = accepted.sum(axis=0), rejected.sum(axis=0)
    rates = {g: (float(a / (a + r)) if a + r else None) for g, a, r in zip(groups, acc, rej)}
    tested = [i for i in range(len(groups)) if acc[i] + rej[i] >= MIN_DECIDED]
    table = np.array([[acc[i], rej[i]] for i in tested])
    p_value, gap, pair = 1.0, 0.0, []
    if len(tested) >= 2 and table[:, 0].sum() and table[:, 1].sum():  # a column of zeros has no test
        p_value = float(scipy_stats.chi2_contingency(table).pvalue)
        tested_rates = table[:, 0] / table.sum(axis=1)
        hi, lo = int(np.argmax(tested_rates)), int(np.argmin(tested_rates))
        gap, pair = float(tested_rates[hi] - tested_rates[lo]), [groups[tested[hi]], groups[tested[lo]]]
    return {"groups": {g: {"accepted": int(a), "rejected": int(r), "acceptance_rate": rates[g]}
                       for g, a, r in zip(groups, acc, rej)},
            "p_value": p_value, "gap": round(gap, 4), "gap_groups": pair,
            "skewed": p_value < ALPHA and gap >= MIN_RATE_GAP}


def scan_texts(texts: Sequence[str], attributes: dict[str, dict[str, list[str]]], *,
               accepted: Sequence[str] | None = None, rejected: Sequence[str] | None = None) -> dict:
    """Mention counts and skew flags for ``texts``; with review decisions, acceptance by group too."""
    patterns = group_patterns(attributes)
    found = mentions(texts, patterns)
    report: dict = {"n_rows": len(texts), "attributes": {}, "issues": []}
    review = accepted is not None and rejected is not None
    if review:
        acc_hits, rej_hits = mentions(accepted, patterns), mentions(rejected, patterns)
        report["n_accepted"], report["n_rejected"] = len(accepted), len(rejected)
    for attribute, groups in attributes.items():
        names = list(groups)
        entry = {"data": mention_skew(found[attribute], names)}
        if entry["data"]["skewed"]:
            shares = ", ".join(f"{g} {entry['data']['groups'][g]['share']:.0%}" for g in names)
            report["issues"].append({"attribute": attribute, "kind": "mention_skew", "p_value": entry["data"]["p_value"],
                                     "message": f"{attribute}: uneven mentions ({shares}; "
                                                f"{entry['data']['mentions']} mentions, p={entry['data']['p_value']:.2g})"})
        if review:
            entry["review"] = review_skew(acc_hits[attribute], rej_hits[attribute], names)
            r = entry["review"]
            if r["skewed"]:
                hi, lo = r["gap_groups"]
                report["issues"].append({
                    "attribute": attribute, "kind": "review_skew", "p_value": r["p_value"],
                    "message": f"{attribute}: reviewers accepted {r['groups'][hi]['acceptance_rate']:.0%} of rows "
                               f"mentioning {hi} but {r['groups'][lo]['acceptance_rate']:.0%} of rows mentioning {lo} "
                               f"(p={r['p_value']:.2g})"})
        report["attributes"][attribute] = entry
    return report


def _row_text(messages: Sequence) -> str:
    # Image and audio parts carry no words to scan until they are aligned; their text parts are scanned.
    return "\n".join(m["content"] if isinstance(m, dict) else "\n".join(m.text_parts()) for m in messages)


def write_scan_report(folder: Path, stem: str, report: dict) -> tuple[Path, Path]:
    from ..evaluate.report import write_json_and_html

    return write_json_and_html(folder, stem, report, "datascan.html", package="tunewright.govern")


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)


def run_data_scan(workspace, dataset: str | None = None) -> list[dict]:
    """Scan one dataset (``name`` = latest version, or ``name@version``), or every registered version;
    the latest version of each name also gets its review queue's decisions. Writes
    reports/data-scan/<name>-<version>.{json,html} (review-<queue> for a queue without a dataset)."""
    from ..data.api import get_dataset
    from ..data.prepare import read_split
    from ..registry.reports import ReportStore
    from ..review.store import QueueFilter, ReviewStore
    from .bias import bias_data_paths, load_attributes

    attributes_path = bias_data_paths(workspace)[1]
    attributes = load_attributes(attributes_path)
    registry = workspace.registry
    if dataset:
        records = [get_dataset(workspace, dataset)]
    else:
        records = registry.list_datasets()
    latest = {r.name: r.id for r in sorted(registry.list_datasets(), key=lambda r: r.id)}
    reviews = ReviewStore(registry)
    queues = set(reviews.queues())

    def decided(queue: str) -> dict[str, list[str]]:
        return {status: [_row_text(c.messages) for c in reviews.candidates(queue, QueueFilter(status=status))]
                for status in ("accepted", "rejected")}

    jobs = []  # (stem, header, texts, review decisions or None, dataset id)
    for record in records:
        folder = Path(record.path)
        texts = [_row_text(row.messages) for split in ("train", "eval") for row in read_split(folder, split)]
        review = decided(record.name) if record.name in queues and latest.get(record.name) == record.id else None
        jobs.append((f"{record.name}-{record.version}", {"dataset": record.name, "version": record.version},
                     texts, review, record.id))
    if not dataset:
        for queue in sorted(queues - {r.name for r in records}):
            jobs.append((f"review-{queue}", {"dataset": None, "version": None, "queue": queue}, [], decided(queue), None))

    out_dir = workspace.dir("reports") / "data-scan"
    store = ReportStore(registry)
    results = []
    for stem, header, texts, review, dataset_id in jobs:
        body = scan_texts(texts, attributes, **(review or {}))
        report = {**header, "queue": header.get("queue") or (header["dataset"] if review else None),
                  "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "attributes_file": str(attributes_path),
                  "thresholds": {"min_mentions": MIN_MENTIONS, "min_decided": MIN_DECIDED, "alpha": ALPHA,
                                 "high_share": HIGH_SHARE, "low_share": LOW_SHARE, "min_rate_gap": MIN_RATE_GAP},
                  **body}
        json_path, html_path = write_scan_report(out_dir, _safe(stem), report)
        summary = {"dataset": header["dataset"], "version": header["version"], "queue": report["queue"],
                   "n_rows": body["n_rows"], "n_accepted": body.get("n_accepted"), "n_rejected": body.get("n_rejected"),
                   "issues": body["issues"]}
        record = store.add_report("data_scan", str(html_path), summary, dataset_id=dataset_id)
        report["paths"] = {"json": str(json_path), "html": str(html_path)}
        report["report_id"] = record.id
        results.append(report)
    return results
