"""Small builders shared by tests."""

from __future__ import annotations

import json
from pathlib import Path

from tunewright.data.schema import ChatRow


def qa_rows(n: int, offset: int = 0) -> list[ChatRow]:
    return [
        ChatRow(
            messages=[
                {"role": "user", "content": f"How much does item {i} cost?"},
                {"role": "assistant", "content": f"Item {i} costs ${i * 7 + 3}."},
            ],
            reference=f"${i * 7 + 3}",
        )
        for i in range(offset, offset + n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_records(n: int) -> list[dict]:
    return [r.to_json() for r in qa_rows(n)]


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the Typer app in-process; the exit code and what it printed."""
    from tunewright.cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def init_cli_workspace(root: Path, base_model, capsys, recipe_tail: str = "") -> Path:
    """`tunewright init` a workspace named shop through the CLI, with ``recipe_tail`` appended to its recipe."""
    code, _, err = run_cli(["init", root, "--name", "shop", "--base-model", base_model], capsys)
    assert code == 0, err
    if recipe_tail:
        recipe = root / "tunewright.yaml"
        recipe.write_text(recipe.read_text() + recipe_tail)
    return root
