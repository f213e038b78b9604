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


def test_held_out_rows_are_scored_per_kind_in_the_report_the_html_and_the_terminal(tmp_path, capsys):
    from tunewright.cli.stages import print_report
    from tunewright.data.schema import ChatRow
    from tunewright.evaluate.api import by_kind

    def row(kind):
        return ChatRow(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                       meta={"kind": kind} if kind else {})

    rows = [row("screenshot"), row("audio"), row("screenshot"), row(None), row("screenshot")]
    before = [{"contains": v} for v in (0.0, 0.0, 1.0, 0.0, 0.0)]
    after = [{"contains": v} for v in (1.0, 0.0, 1.0, 1.0, 0.0)]
    kinds = by_kind(rows, before, after)
    # Worked out by hand: screenshots are rows 0, 2, 4; audio row 1; the row without a kind is "other".
    assert kinds == {"screenshot": {"n": 3, "base": {"contains": 1 / 3}, "tuned": {"contains": 2 / 3}},
                     "audio": {"n": 1, "base": {"contains": 0.0}, "tuned": {"contains": 0.0}},
                     "other": {"n": 1, "base": {"contains": 0.0}, "tuned": {"contains": 1.0}}}
    assert by_kind([row(None), row(None)], before[:2], after[:2]) == {}  # no kinds: no table

    report = {
        "adapter": "a", "base_model": "m", "dataset": {"name": "d", "version": "v"}, "split": "eval", "n_examples": 5,
        "created_at": "now", "before": {"metrics": {"contains": 0.2}}, "after": {"metrics": {"contains": 0.6}},
        "training": {}, "examples": [], "by_kind": kinds,
    }
    json_path, html_path = write_report(tmp_path, report)
    assert json.loads(json_path.read_text())["by_kind"]["screenshot"]["n"] == 3
    html = " ".join(html_path.read_text().split())
    assert "<td>screenshot</td><td>3</td>" in html and "33.3% &rarr; 66.7%" in html
    print_report({**report, "paths": {"html": str(html_path)}})
    out = capsys.readouterr().out
    assert "held-out rows by kind" in out and "screenshot" in out and "33.3% -> 66.7%" in out
