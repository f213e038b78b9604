"""The report: regressions and misses come first; files are complete HTML and JSON."""

import json

from tunewright.evaluate.api import _interesting
from tunewright.evaluate.report import write_report


def _result(question, before, after):
    return {"question": question, "expected": "x", "base_response": "b", "tuned_response": "t",
            "before": {"contains": before}, "after": {"contains": after}}


def test_examples_are_ordered_by_what_needs_attention():
    results = [_result("both", 1.0, 1.0), _result("fixed", 0.0, 1.0), _result("miss", 0.0, 0.0), _result("worse", 1.0, 0.0)]
    ordered = _interesting(results)
    assert [r["question"] for r in ordered] == ["worse", "miss", "fixed", "both"]
    assert [r["verdict"] for r in ordered] == ["regressed", "still wrong", "fixed", "both right"]


def test_report_files(tmp_path):
    report = {
        "adapter": "a<b>", "base_model": "m", "dataset": {"name": "d", "version": "v"}, "split": "eval", "n_examples": 1,
        "created_at": "now", "before": {"metrics": {"contains": 0.0}}, "after": {"metrics": {"contains": 1.0}},
        "training": {"losses": [2.0, 1.0], "steps": 2, "tokens_seen": 10, "tokens_per_second": 5.0,
                     "train_seconds": 2.0, "final_loss": 1.0},
        "examples": _interesting([_result("q", 0.0, 1.0)]),
    }
    json_path, html_path = write_report(tmp_path, report)
    assert json.loads(json_path.read_text())["after"]["metrics"]["contains"] == 1.0
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") == 2  # before/after chart and loss curve
    assert "a&lt;b&gt;" in html and "+100.0 pts" in html  # escaped, and the change is shown
    assert not list(tmp_path.glob(".*tmp"))
