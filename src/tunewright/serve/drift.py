"""Drift report: how the inputs a served model sees differ from the data it was trained on.

Three views, each cheap and explainable: input lengths (KS test), topic mix over k-means clusters
of the training embeddings (Jensen-Shannon divergence), and requests far from every training
cluster (out-of-distribution share). The verdict thresholds travel inside the report.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..errors import TunewrightError
from ..reports import DRIFT_REPORT, DatasetRef, DriftReport

if TYPE_CHECKING:
    import torch

THRESHOLDS = {"jsd": 0.1, "ood_share": 0.2, "ks_p_value": 0.01, "ks_statistic": 0.2}
MIN_LIVE = 10
MIN_MODEL_REQUESTS = 20
OOD_PERCENTILE = 95
MAX_CLUSTERS = 8
MAX_OOD_EXAMPLES = 10


# --- reading the server's request logs ---------------------------------------------------------

def _utc(value: datetime) -> datetime:
    # Naive timestamps are taken as UTC so that comparisons never raise on mixed inputs.
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def live_text(record: dict) -> str:
    """What the model was asked: the last user message of a chat, or a completion's prompt."""
    messages = record.get("messages")
    if record.get("endpoint") != "completions" and isinstance(messages, list):
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            return users[-1]
        raise TunewrightError("chat request has no user message with text content", field="messages")
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    raise TunewrightError("request has neither 'messages' (chat) nor a 'prompt' (completions)", field="prompt")


def read_request_logs(folder: Path, *, since: datetime | None = None) -> list[dict]:
    """Every logged request in ``folder/*.jsonl`` (files in name order), optionally only those at or after ``since``."""
    since = _utc(since) if since is not None else None
    records = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        with open(path, "rb") as fh:  # bytes, so a bad encoding is reported with its line number too
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    why = f"not valid JSON: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
                    raise TunewrightError(why, file=path, line=number) from None
                if not isinstance(record, dict):
                    raise TunewrightError("a request log line must be a JSON object", file=path, line=number)
                try:
                    live_text(record)
                    ts = _utc(datetime.fromisoformat(record["ts"])) if since is not None else None
                except TunewrightError as exc:
                    raise TunewrightError(exc.message, file=path, line=number, field=exc.field) from None
                except (KeyError, TypeError, ValueError):
                    raise TunewrightError("missing or invalid ISO timestamp", file=path, line=number, field="ts") from None
                if ts is None or ts >= since:
                    records.append(record)
    return records


# --- statistics --------------------------------------------------------------------------------

def _summary(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)), "max": int(values.max())}


def ks_two_sample(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its p-value, from scipy.

    scipy chooses the exact distribution for the few-dozen-request samples a drift check often sees
    and the asymptotic one beyond; lengths are integers with many ties, which makes either p-value
    conservative, never too small."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(a, float), np.asarray(b, float))
    return float(result.statistic), float(result.pvalue)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Base-2 Jensen-Shannon divergence of two distributions: 0 identical, 1 disjoint."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x):
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(max((kl(p) + kl(q)) / 2, 0.0), 1.0)


def _lengths(train: np.ndarray, live: np.ndarray, bins: int = 25) -> dict:
    d, p = ks_two_sample(train, live)
    both = np.concatenate([train, live])
    # Lengths are counts: one bar per value while that stays readable, so no bin is empty by rounding.
    span = both.max() - both.min()
    edges = np.arange(both.min(), both.max() + 2) - 0.5 if span < 2 * bins else np.histogram_bin_edges(both, bins=bins)
    share = lambda v: (np.histogram(v, bins=edges)[0] / len(v)).tolist()  # noqa: E731
    return {"train": _summary(train), "live": _summary(live), "ks": {"statistic": d, "p_value": p},
            "live_share_above_train_max": float(np.mean(live > train.max())),
            "histogram": {"edges": edges.tolist(), "train": share(train), "live": share(live)}}


# --- topics: spherical k-means on unit embeddings ----------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 4, iters: int = 100) -> np.ndarray:
    """Unit-length centroids (k, dim). Cosine geometry, because the embeddings compare by cosine."""
    rng = np.random.default_rng(seed)
    best, best_cost = None, math.inf
    for _ in range(n_init):
        # k-means++: each next seed is drawn in proportion to its squared distance from the chosen ones.
        centroids = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.maximum(1.0 - x @ np.array(centroids).T, 0.0).min(axis=1) ** 2
            total = d2.sum()
            centroids.append(x[rng.choice(len(x), p=d2 / total)] if total > 0 else x[rng.integers(len(x))])
        c = np.array(centroids)
        assign = None
        for _ in range(iters):
            sims = x @ c.T
            new = sims.argmax(axis=1)
            if assign is not None and np.array_equal(new, assign):
                break
            assign = new
            worst = iter(np.argsort(sims.max(axis=1)))
            for j in range(k):
                members = x[assign == j]
                # An emptied cluster restarts at a point the others serve worst.
                c[j] = members.sum(axis=0) if len(members) else x[next(worst)]
            c = _unit(c)
        cost = float(np.sum(1.0 - (x @ c.T).max(axis=1)))
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def _held_out_distances(x: np.ndarray, assign: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Each training point's cosine distance to its nearest centroid, that centroid computed without it.

    A centroid built partly from a point sits closer to it than to any new input; on a few dozen
    rows that flagged most unseen in-domain requests as out-of-distribution.
    """
    k = sims.shape[1]
    sums = np.stack([x[assign == j].sum(axis=0) for j in range(k)])
    own = 1.0 - np.sum(x * _unit(sums[assign] - x), axis=1)  # a singleton leaves a zero vector: distance 1
    others = np.where(np.arange(k) == assign[:, None], -np.inf, sims).max(axis=1)
    return np.minimum(own, 1.0 - others)


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _topic_drift(train_assign: np.ndarray, live_assign: np.ndarray, live_dist: np.ndarray, threshold: float, k: int):
    p = np.bincount(train_assign, minlength=k).astype(float)
    q = np.bincount(live_assign, minlength=k).astype(float)
    return jensen_shannon(p, q), float(np.mean(live_dist > threshold))


def _chance_jsd(train_assign: np.ndarray, n: int, k: int, rng: np.random.Generator) -> float:
    # JSD from a finite sample is biased upwards; this is what n requests drawn from the training
    # mix itself would typically score, so a reader can tell drift from sampling noise.
    p = np.bincount(train_assign, minlength=k) / len(train_assign)
    draws = rng.multinomial(n, p, size=200).astype(float)
    return float(np.percentile([jensen_shannon(p, d) for d in draws], 95))


# --- the report --------------------------------------------------------------------------------

def build_drift_report(train_texts: Sequence[str], live_records: Sequence[dict], *,
                       embed: Callable[[Sequence[str]], "torch.Tensor"], seed: int = 0) -> DriftReport:
    """JSON-able comparison of ``live_records`` (request log objects) with ``train_texts``."""
    if len(train_texts) < 2:
        raise TunewrightError(f"a drift report needs at least 2 training examples; the dataset has {len(train_texts)}")
    live_texts = [live_text(r) for r in live_records]
    served = [str(r.get("served") or r.get("model") or "unknown") for r in live_records]
    by_model: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(served):
        by_model[name].append(i)
    stamps = sorted(str(r["ts"]) for r in live_records if r.get("ts"))
    # The verdict's keys (status, verdict, message and the measures) are added below.
    report = DriftReport(
        format=DRIFT_REPORT.version,
        kind="drift",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        n_train=len(train_texts),
        n_live=len(live_texts),
        live_window={"first": stamps[0], "last": stamps[-1]} if stamps else None,
        thresholds={**THRESHOLDS, "ks_on": "words", "ood_percentile": OOD_PERCENTILE,
                    "min_live": MIN_LIVE, "min_model_requests": MIN_MODEL_REQUESTS},
        per_model=[
            {"served": name, "requests": len(idx),
             "requested_as": dict(Counter(str(live_records[i].get("model")) for i in idx).most_common())}
            for name, idx in sorted(by_model.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
    )
    if len(live_texts) < MIN_LIVE:
        report.update(status="not_enough_data", verdict=None,
                      message=f"not enough live requests: {len(live_texts)} logged, at least {MIN_LIVE} needed for a verdict")
        return report

    words = lambda texts: np.array([len(t.split()) for t in texts], float)  # noqa: E731
    chars = lambda texts: np.array([len(t) for t in texts], float)  # noqa: E731
    lengths = {"words": _lengths(words(train_texts), words(live_texts)),
               "chars": _lengths(chars(train_texts), chars(live_texts))}

    vectors = embed(list(train_texts) + live_texts)
    vectors = _unit(np.asarray(vectors.detach().cpu().float().numpy() if hasattr(vectors, "detach") else vectors, float))
    train_x, live_x = vectors[: len(train_texts)], vectors[len(train_texts):]
    distinct = len(np.unique(train_x.round(6), axis=0))
    # Never more clusters than distinct training points, else some would stay empty.
    k = max(2, min(MAX_CLUSTERS, len(train_texts) // 5))
    k = min(k, distinct) if distinct >= 2 else 2
    centroids = kmeans(train_x, k, seed=seed)
    train_sims, live_sims = train_x @ centroids.T, live_x @ centroids.T
    train_assign, live_assign = train_sims.argmax(1), live_sims.argmax(1)
    live_dist = 1.0 - live_sims.max(1)
    # A tiny slack so float noise on exact training duplicates never reads as out-of-distribution.
    threshold = float(np.percentile(_held_out_distances(train_x, train_assign, train_sims), OOD_PERCENTILE)) + 1e-6
    jsd, ood_share = _topic_drift(train_assign, live_assign, live_dist, threshold, k)

    clusters = []
    for j in range(k):
        members = np.flatnonzero(train_assign == j)
        central = dict.fromkeys(train_texts[i] for i in members[np.argsort(-train_sims[members, j])])
        clusters.append({"id": j, "label": [_shorten(t) for t in list(central)[:3]],
                         "train_count": int(len(members)), "live_count": int(np.sum(live_assign == j)),
                         "train_share": float(len(members) / len(train_texts)),
                         "live_share": float(np.mean(live_assign == j))})
    ood = np.flatnonzero(live_dist > threshold)
    ood = ood[np.argsort(-live_dist[ood])][:MAX_OOD_EXAMPLES]
    examples = [{"text": _shorten(live_texts[i], 200), "distance": float(live_dist[i]), "nearest_cluster": int(live_assign[i]),
                 "served": served[i], "ts": live_records[i].get("ts"), "request_id": live_records[i].get("request_id")}
                for i in ood]
    for entry in report["per_model"]:
        idx = by_model[entry["served"]]
        if len(idx) >= MIN_MODEL_REQUESTS:
            entry["jsd"], entry["ood_share"] = _topic_drift(train_assign, live_assign[idx], live_dist[idx], threshold, k)

    ks = lengths["words"]["ks"]
    reasons = []
    if jsd > THRESHOLDS["jsd"]:
        reasons.append(f"topic mix moved: Jensen-Shannon divergence {jsd:.3f} > {THRESHOLDS['jsd']}")
    if ood_share > THRESHOLDS["ood_share"]:
        reasons.append(f"{ood_share:.0%} of requests are far from all training topics (> {THRESHOLDS['ood_share']:.0%})")
    if ks["p_value"] < THRESHOLDS["ks_p_value"] and ks["statistic"] > THRESHOLDS["ks_statistic"]:
        reasons.append(f"input lengths differ: KS {ks['statistic']:.2f} > {THRESHOLDS['ks_statistic']}, "
                       f"p {ks['p_value']:.2g} < {THRESHOLDS['ks_p_value']}")
    report.update(
        status="ok",
        verdict={"drifted": bool(reasons), "reasons": reasons},
        message="live inputs have drifted from the training data" if reasons else "no drift detected",
        lengths=lengths,
        topics={"k": k, "clusters": clusters, "jsd": jsd,
                "jsd_chance_p95": _chance_jsd(train_assign, len(live_texts), k, np.random.default_rng(seed)),
                "ood_threshold": threshold, "ood_share": ood_share, "ood_count": int(np.sum(live_dist > threshold)),
                "ood_examples": examples},
    )
    return report


def _charts(report: DriftReport) -> dict[str, str]:
    if report.get("status") != "ok":
        return {}
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a server
    import matplotlib.pyplot as plt

    from ..evaluate.report import png

    charts = {}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for ax, unit in zip(axes, ("words", "chars")):
        hist = report["lengths"][unit]["histogram"]
        edges = np.array(hist["edges"])
        for side, color in (("train", "#adb5bd"), ("live", "#2a6f97")):
            ax.stairs(np.array(hist[side]) * 100, edges, fill=True, alpha=0.55, color=color, label=side)
        ax.set_xlabel(f"input length ({unit})")
        ax.set_ylabel("% of inputs")
        ax.legend()
    charts["lengths"] = png(fig)
    plt.close(fig)
    clusters = report["topics"]["clusters"]
    fig, ax = plt.subplots(figsize=(6, 3))
    xs = np.arange(len(clusters))
    ax.bar(xs - 0.2, [c["train_share"] * 100 for c in clusters], 0.4, label="train", color="#adb5bd")
    ax.bar(xs + 0.2, [c["live_share"] * 100 for c in clusters], 0.4, label="live", color="#2a6f97")
    ax.set_xticks(xs, [f"#{c['id']}" for c in clusters])
    ax.set_xlabel("topic cluster")
    ax.set_ylabel("% of inputs")
    ax.legend()
    charts["clusters"] = png(fig)
    plt.close(fig)
    return charts


def write_drift_report(folder: Path, report: DriftReport) -> tuple[Path, Path]:
    from ..evaluate.report import write_json_and_html

    return write_json_and_html(folder, "drift", report, "drift.html", package="tunewright.serve",
                               charts=_charts(report))


def drift_for_workspace(workspace, *, dataset: str | None = None, since: datetime | None = None,
                        embed=None) -> tuple[DriftReport, Path, Path]:
    """Compare ``<root>/logs/requests`` with the training split; write ``<root>/reports/drift/``."""
    from ..data.api import load_split

    logs = Path(workspace.root) / "logs" / "requests"
    if not any(logs.glob("*.jsonl")):
        raise TunewrightError("no request logs found; request logging is opt-in: set 'serve.log_requests: true' "
                              "in the recipe and serve some traffic first", file=logs)
    records = read_request_logs(logs, since=since)
    record, rows = load_split(workspace, dataset, "train")
    train_texts = [next(m.content for m in reversed(row.messages) if m.role == "user") for row in rows]
    if embed is None:
        from ..models.embeddings import default_embedder

        embed = default_embedder().encode
    report = build_drift_report(train_texts, records, embed=embed)
    report["dataset"] = DatasetRef(name=record.name, version=record.version)
    report["since"] = _utc(since).isoformat() if since is not None else None
    json_path, html_path = write_drift_report(workspace.dir("reports") / "drift", report)
    return report, json_path, html_path
