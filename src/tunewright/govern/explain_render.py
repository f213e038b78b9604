"""The explanation report: what the adapter changed, explain.json, and a self-contained explain.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MOVED = 0.05  # a segment's share of the attribution must move this much (5 points) to be named
_POSITIVE, _NEGATIVE = (33, 102, 172), (178, 24, 43)  # blue: made the answer likelier; red: less likely


def shares(seq_attr: list[float]) -> list[float]:
    """Each segment's signed share of the total absolute attribution: comparable across models
    whose raw attributions differ in scale (a confident model moves log-probs less)."""
    total = sum(abs(v) for v in seq_attr)
    return [v / total if total else 0.0 for v in seq_attr]


def adapter_changes(labels: list[str], base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """Which segments gained or lost weight between the base's explanation and the tuned model's."""
    before, after = shares(base["seq_attr"]), shares(tuned["seq_attr"])
    rows = [{"segment": label, "base_share": b, "tuned_share": a, "change": a - b}
            for label, b, a in zip(labels, before, after)]
    gained = sorted((r for r in rows if r["change"] >= MOVED), key=lambda r: -r["change"])[:3]
    lost = sorted((r for r in rows if r["change"] <= -MOVED), key=lambda r: r["change"])[:3]

    def named(found: list[dict]) -> str:
        return ", ".join(f"'{r['segment']}' ({r['change'] * 100:+.0f} pts)" for r in found)

    top_base, top_tuned = (labels[max(range(len(labels)), key=lambda j: abs(m["seq_attr"][j]))] for m in (base, tuned))
    parts = ["The tuned model gives a different answer." if base["answer"] != tuned["answer"]
             else "Both models give the same answer."]
    if gained:
        parts.append(f"The adapter leans more on {named(gained)}.")
    if lost:
        parts.append(f"It leans less on {named(lost)}.")
    if not gained and not lost:
        parts.append(f"No segment's share of the attribution moved by {MOVED * 100:.0f} points or more.")
    parts.append(f"Top segment: base '{top_base}', tuned '{top_tuned}'."
                 if top_base != top_tuned else f"Both rely most on '{top_tuned}'.")
    return {"note": " ".join(parts), "rows": rows, "gained": [r["segment"] for r in gained],
            "lost": [r["segment"] for r in lost]}


def heat(value: float, scale: float) -> str:
    """CSS for a cell: blue for positive, red for negative, opacity by |value| / scale."""
    strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    r, g, b = _POSITIVE if value >= 0 else _NEGATIVE
    ink = "#fff" if strength > 0.6 else "#1d3557"
    return f"background: rgba({r},{g},{b},{strength:.3f}); color: {ink}"


def _points(share: float) -> str:
    return f"{round(share * 100):+d}"  # rounds first, so a tiny negative reads +0, not -0


def _scale(values) -> float:
    flat = [abs(v) for row in values for v in (row if isinstance(row, list) else [row])]
    return max(flat, default=0.0)


def render_html(report: dict[str, Any]) -> str:
    from ..evaluate.report import render_template

    return render_template("explain.html", package="tunewright.govern",
                           filters={"heat": heat, "scale": _scale, "points": _points}, report=report)


def write_report(folder: Path, slug: str, report: dict[str, Any]) -> tuple[Path, Path]:
    from ..evaluate.report import write_json_and_html

    return write_json_and_html(folder, slug, report, "explain.html", package="tunewright.govern",
                               filters={"heat": heat, "scale": _scale, "points": _points})
