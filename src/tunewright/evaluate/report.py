"""report.json and a self-contained report.html (charts embedded), written atomically."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..io import atomic_write_json, atomic_write_text
from .metrics import get_metric


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _charts(report: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a server
    import matplotlib.pyplot as plt

    charts = {}
    losses = report.get("training", {}).get("losses") or []
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(range(1, len(losses) + 1), losses, color="#2a6f97")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        charts["loss"] = _png(fig)
        plt.close(fig)
    names = list(report["before"]["metrics"])
    fig, ax = plt.subplots(figsize=(6, 3))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [report["before"]["metrics"][n] * 100 for n in names], 0.4, label="base", color="#adb5bd")
    ax.bar([x + 0.2 for x in xs], [report["after"]["metrics"][n] * 100 for n in names], 0.4, label="tuned", color="#2a9d8f")
    ax.set_xticks(list(xs), [get_metric(n).label for n in names])
    ax.set_ylabel("% of eval examples")
    ax.set_ylim(0, 100)
    ax.legend()
    charts["metrics"] = _png(fig)
    plt.close(fig)
    return charts


def write_report(folder: Path, report: dict) -> tuple[Path, Path]:
    json_path, html_path = folder / "report.json", folder / "report.html"
    atomic_write_json(json_path, report)
    env = Environment(loader=PackageLoader("tunewright.evaluate", "templates"), autoescape=select_autoescape())
    html = env.get_template("report.html").render(
        report=report, charts=_charts(report), label=lambda n: get_metric(n).label
    )
    atomic_write_text(html_path, html)
    return json_path, html_path
