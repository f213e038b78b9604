"""report.json and a self-contained report.html (charts embedded), written atomically; and the one
way every other report (bias, data scan, drift, explanations, method comparison) is rendered and
written beside its JSON, with the same stylesheet."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape

from ..io import atomic_write_json, atomic_write_text
from ..reports import EvalReport
from .metrics import get_metric


def render_template(template: str, *, package: str = "tunewright.evaluate", filters: dict | None = None,
                    **context) -> str:
    """``template`` from ``package``'s templates, with this package's templates (the shared report
    stylesheet) behind it."""
    loaders = [PackageLoader(package, "templates")]
    if package != "tunewright.evaluate":
        loaders.append(PackageLoader("tunewright.evaluate", "templates"))
    env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(["html"]))
    env.globals.update(filters or {})
    return env.get_template(template).render(**context)


def write_json_and_html(folder: Path, stem: str, report: dict, template: str, *,
                        package: str = "tunewright.evaluate", filters: dict | None = None,
                        **context) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.html`` in ``folder``, each written atomically."""
    json_path, html_path = Path(folder) / f"{stem}.json", Path(folder) / f"{stem}.html"
    atomic_write_json(json_path, report)
    atomic_write_text(html_path, render_template(template, package=package, filters=filters, report=report,
                                                 **context))
    return json_path, html_path


def png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _charts(report: EvalReport) -> dict[str, str]:
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
        charts["loss"] = png(fig)
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
    charts["metrics"] = png(fig)
    plt.close(fig)
    return charts


def write_report(folder: Path, report: EvalReport) -> tuple[Path, Path]:
    return write_json_and_html(folder, "report", report, "report.html", charts=_charts(report),
                               label=lambda n: get_metric(n).label)
