"""`tunewright compare` on the tiny model: one budget, a table row per method, compare.json/png/html."""

from __future__ import annotations

import json

import pytest

from tunewright.cli import context
from tunewright.config import TrainSpec
from tunewright.train.compare import method_spec

from helpers import chat_records, init_cli_workspace, run_cli as run, write_jsonl


@pytest.fixture
def workspace(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(context.console, "width", 220)  # one table row per line, whatever the terminal
    # A LoRA rank in the recipe: compare must leave it out for the methods that have no rank.
    ws = init_cli_workspace(
        tmp_path / "ws", tiny_model_dir, capsys,
        "train:\n  r: 4\n  alpha: 8\n  learning_rate: 0.02\n  batch_size: 4\n  max_length: 128\n"
        "eval:\n  max_new_tokens: 6\n  batch_size: 4\n  metrics: [contains, token_f1]\n",
    )
    data = write_jsonl(tmp_path / "rows.jsonl", chat_records(20))
    code, _, err = run(["-w", ws, "data", "import", data, "--eval-fraction", "0.2"], capsys)
    assert code == 0, err
    return ws


def _table_rows(out: str) -> dict[str, str]:
    return {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}


def test_compare_trains_each_method_in_its_own_process(workspace, capsys):
    code, out, err = run(["-w", workspace, "compare", "--methods", "lora,prompt-tuning", "--max-steps", "2",
                          "--limit", "3"], capsys)
    assert code == 0, err
    rows = _table_rows(out)
    assert {"lora", "prompt-tuning"} <= set(rows)
    assert "yes" in rows["lora"] and "identical" in rows["lora"] and "identical" in rows["prompt-tuning"]
    assert "2 steps × 4 rows per method" in out

    folder = workspace / "reports" / "compare"
    report = json.loads((folder / "compare.json").read_text())
    assert (folder / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (folder / "compare.html").read_text()
    assert "data:image/png;base64," in html and "prompt-tuning" in html
    assert report["metric"] == "contains" and report["budget"]["steps"] == 2 and report["isolated"] is True
    by_method = {row["method"]: row for row in report["methods"]}
    assert [row["method"] for row in report["methods"]] == ["lora", "prompt-tuning"]
    for name, row in by_method.items():
        assert row["status"] == "ok", row["error"]
        assert row["steps"] == 2 and len(row["losses"]) == 2
        assert 0 < row["trainable_share"] < 1 and row["tokens_per_second"] > 0 and row["peak_rss_mb"] > 50
        assert row["reload_identical"] is True and row["eval_examples"] == 3
        assert 0 <= row["before"] <= 1 and 0 <= row["after"] <= 1
    assert by_method["lora"]["merged"] is True and by_method["prompt-tuning"]["merged"] is False
    # Same token budget: the same rows in the same order, so the same number of tokens.
    assert by_method["lora"]["tokens_seen"] == by_method["prompt-tuning"]["tokens_seen"]
    assert by_method["lora"]["trainable_share"] > by_method["prompt-tuning"]["trainable_share"]

    from tunewright.workspace import Workspace

    registry = Workspace.open(workspace).registry
    assert {a.name for a in registry.list_adapters()} >= {"compare-lora", "compare-prompt-tuning"}
    assert registry.get_adapter("compare-prompt-tuning").method == "prompt-tuning"


def test_compare_in_process_with_bottleneck(workspace, capsys):
    code, out, err = run(["-w", workspace, "compare", "--methods", "bottleneck", "--max-steps", "2", "--limit", "2",
                          "--in-process"], capsys)
    assert code == 0, err
    assert "bottleneck" in _table_rows(out)
    report = json.loads((workspace / "reports" / "compare" / "compare.json").read_text())
    [row] = report["methods"]
    assert row["status"] == "ok" and row["peak_rss_scope"] == "increase" and row["merged"] is False
    assert row["reload_identical"] is True


@pytest.mark.parametrize(
    ("methods", "message"),
    [("lora,lora-xl", "unknown PEFT method 'lora-xl'"), ("lora,lora", "listed twice"), (",", "no methods")],
)
def test_compare_refuses_bad_method_lists_before_training(workspace, capsys, methods, message):
    code, _, err = run(["-w", workspace, "compare", "--methods", methods, "--max-steps", "1"], capsys)
    assert code == 2 and message in err
    assert not (workspace / "reports" / "compare").exists()


def test_method_spec_keeps_the_budget_and_drops_other_families_options():
    recipe = TrainSpec(r=4, alpha=8, learning_rate=0.02, batch_size=4, method="lora", method_settings={},
                       target_modules=["q_proj"])
    prompt = method_spec(recipe, "prompt-tuning", max_steps=3)
    assert prompt.method == "prompt-tuning" and prompt.max_steps == 3 and prompt.batch_size == 4
    assert prompt.learning_rate == 0.02 and not {"r", "alpha", "target_modules"} & prompt.model_fields_set
    dora = method_spec(recipe, "dora")
    assert dora.r == 4 and dora.target_modules == ["q_proj"] and dora.max_steps is None
    tuned = TrainSpec(method="bottleneck", method_settings={"variant": "pfeiffer"})
    assert method_spec(tuned, "bottleneck").method_settings == {"variant": "pfeiffer"}
    assert method_spec(tuned, "ia3").method_settings == {}
