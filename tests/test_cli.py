"""The CLI end to end on a tiny model, and one clear line for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


from helpers import chat_records, init_cli_workspace, run_cli as run, write_jsonl


@pytest.fixture
def workspace(tmp_path, tiny_model_dir, capsys):
    return init_cli_workspace(
        tmp_path / "ws", tiny_model_dir, capsys,
        "train:\n  r: 4\n  alpha: 8\n  learning_rate: 0.01\n  batch_size: 4\n  checkpoint_every: 2\n  max_length: 128\n"
        "eval:\n  max_new_tokens: 8\n  batch_size: 4\n",
    )


def _registry(ws):
    from tunewright.workspace import Workspace

    return Workspace.open(ws).registry


def test_full_path_import_train_eval_generate(workspace, tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", chat_records(20) + chat_records(2))  # two exact duplicates
    code, out, err = run(["-w", workspace, "data", "import", data, "--eval-fraction", "0.2"], capsys)
    assert code == 0, err
    assert "16 train, 4 eval, 2 exact duplicates removed" in out

    code, out, err = run(["-w", workspace, "train", "--max-steps", "3"], capsys)
    assert code == 0, err
    adapter = _registry(workspace).get_adapter("shop")
    assert (Path(adapter.path) / "adapter_model.safetensors").is_file()
    run_record = _registry(workspace).get_run(adapter.run_id)
    assert run_record.status == "completed" and len(run_record.metrics["losses"]) == 3
    assert run_record.config["train"]["max_steps"] == 3 and run_record.library_versions["torch"].startswith("2.13")

    code, out, err = run(["-w", workspace, "eval", "--limit", "3"], capsys)
    assert code == 0, err
    assert "answer contained" in out
    report = json.loads((workspace / "reports" / "shop" / "report.json").read_text())
    assert report["n_examples"] == 3 and set(report["before"]["metrics"]) == {"exact_match", "contains", "token_f1"}
    assert "<img" in (workspace / "reports" / "shop" / "report.html").read_text()
    assert len(_registry(workspace).list_evaluations()) == 2

    prompts = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "How much is item 3?"},
                                                  {"id": 2, "messages": [{"role": "user", "content": "Hi"}]}])
    for ref in ("shop", "base", adapter.path):
        out_file = tmp_path / "gen" / "out.jsonl"
        code, out, err = run(["-w", workspace, "generate", "--model", ref, "--input", prompts, "--output", out_file], capsys)
        assert code == 0, err
        rows = [json.loads(line) for line in out_file.read_text().splitlines()]
        assert [r["id"] for r in rows] == [1, 2] and all(isinstance(r["response"], str) for r in rows)
        assert rows[0]["prompt"] == "How much is item 3?"

    code, out, err = run(["-w", workspace, "registry", "events"], capsys)
    assert code == 0 and "hash chain verifies" in out
    actions = [e.action for e in _registry(workspace).events()]
    assert actions.count("adapter.registered") == 1 and actions.count("evaluation.recorded") == 2


def test_workspace_from_env(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TUNEWRIGHT_WORKSPACE", str(workspace))
    data = write_jsonl(tmp_path / "train.jsonl", chat_records(5))
    code, out, err = run(["data", "import", data], capsys)
    assert code == 0, err
    assert [d.name for d in _registry(workspace).list_datasets()] == ["shop"]


BAD_FILES = {
    "malformed.jsonl": (b'{"prompt": "hi", "completion": "hello"}\n{"messages": [\n', r"malformed.jsonl:2"),
    "missing.jsonl": (b'{"instruction": "Say hi"}\n', r"missing.jsonl:1: field 'output'"),
    "misnamed.jsonl": (b'{"prompt": "hi", "completon": "hello"}\n', r"misnamed.jsonl:1: field 'completion'"),
    "empty.jsonl": (b"", r"empty.jsonl: file has no rows"),
    "latin1.jsonl": (b'{"prompt": "ok", "completion": "fine"}\n{"prompt": "caf\xe9", "completion": "x"}\n', r"latin1.jsonl:2"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_import_is_one_line_and_registers_nothing(workspace, tmp_path, capsys, name):
    content, pattern = BAD_FILES[name]
    bad = tmp_path / name
    bad.write_bytes(content)
    good = write_jsonl(tmp_path / "good.jsonl", chat_records(4))
    code, out, err = run(["-w", workspace, "data", "import", good, bad], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert _registry(workspace).list_datasets() == []
    assert list((workspace / "datasets").iterdir()) == []


def test_unknown_model_path(tmp_path, capsys):
    code, out, err = run(["init", tmp_path / "ws", "--base-model", tmp_path / "nowhere"], capsys)
    assert code == 2 and "not found" in err and "nowhere" in err
    assert not (tmp_path / "ws" / "tunewright.yaml").exists()


def test_unknown_adapter_and_unwritable_output(workspace, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Hi"}])
    code, out, err = run(["-w", workspace, "generate", "--model", "ghost", "-i", prompts, "-o", tmp_path / "o.jsonl"], capsys)
    assert code == 2 and "adapter 'ghost' not found" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, out, err = run(["-w", workspace, "generate", "--model", "base", "-i", prompts, "-o", blocker / "out.jsonl"], capsys)
    assert code == 2 and "cannot write to folder" in err and str(blocker) in err
    assert not (blocker.parent / "out.jsonl").exists()


def test_generate_rejects_bad_rows_before_loading_a_model(workspace, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}, {"question": "no field"}])
    code, out, err = run(["-w", workspace, "generate", "--model", "base", "-i", bad, "-o", tmp_path / "o.jsonl"], capsys)
    assert code == 2 and "in.jsonl:2: field 'messages'" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_not_a_workspace_and_nothing_to_resume(workspace, tmp_path, capsys):
    code, out, err = run(["-w", tmp_path / "elsewhere", "train"], capsys)
    assert code == 2 and "not a Tunewright workspace" in err
    data = write_jsonl(tmp_path / "t.jsonl", chat_records(6))
    assert run(["-w", workspace, "data", "import", data], capsys)[0] == 0
    code, out, err = run(["-w", workspace, "train", "--resume"], capsys)
    assert code == 2 and "no unfinished training run" in err


def test_train_on_unknown_dataset(workspace, capsys):
    code, out, err = run(["-w", workspace, "train", "--dataset", "nope"], capsys)
    assert code == 2 and "dataset 'nope' not found" in err


def test_bad_recipe_is_reported_with_line(workspace, capsys):
    recipe = workspace / "tunewright.yaml"
    recipe.write_text(recipe.read_text() + "bogus: 1\n")
    code, out, err = run(["-w", workspace, "train"], capsys)
    assert code == 2 and "field 'bogus': unknown field" in err and "tunewright.yaml:" in err


def test_data_stats_and_list(workspace, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rows.jsonl", chat_records(10))
    assert run(["-w", workspace, "data", "import", data, "--name", "rows"], capsys)[0] == 0
    code, out, err = run(["-w", workspace, "data", "stats", "--dataset", "rows"], capsys)
    assert code == 0, err
    assert "rows" in out and "p95" in out.lower()
    code, out, err = run(["-w", workspace, "data", "list"], capsys)
    assert code == 0 and "rows" in out


@pytest.mark.parametrize("args, message", [(["eval", "--model", "x"], "No such option: --model"),
                                           (["evall"], "No such command 'evall'"),
                                           (["eval", "--limit", "abc"], "Invalid value for '--limit'")])
def test_command_line_mistakes_are_one_usage_error_not_a_traceback(args, message, capsys):
    # Typer 0.29 carries its own copy of click, whose errors are not click.ClickException.
    code, out, err = run(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err + out
