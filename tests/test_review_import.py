"""The queue's export and import through the CLI: decisions travel, nothing is recorded twice."""

import json

import pytest

from review_helpers import add_round
from tunewright.cli.main import main
from tunewright.config import Recipe
from tunewright.review import QueueFilter, ReviewStore
from tunewright.workspace import Workspace


@pytest.fixture
def workspace(tiny_model_dir, tmp_path):
    ws = Workspace.init(tmp_path / "ws", Recipe(name="shop", base_model=str(tiny_model_dir)))
    store = ReviewStore(ws.registry)
    add_round(store, [("Return window?", "45 days."), ("Free shipping?", "Over $75."), ("Phone?", "404-555-0142.")],
              queue="shop")
    a, b, _ = store.candidates("shop")
    store.review(a.id, reviewer="ann", decision="accept", rating=5,
                 edited=[a.messages[0], {"role": "assistant", "content": "Within 45 days."}])
    store.review(b.id, reviewer="ann", decision="reject", reasons=["wrong"], note="it is over $75")
    return ws


@pytest.mark.parametrize("fmt,suffix", [("label-studio", "json"), ("argilla", "json"), ("jsonl", "jsonl"),
                                        ("parquet", "parquet")])
def test_export_then_import_into_a_new_queue_keeps_decisions(workspace, tmp_path, capsys, fmt, suffix):
    path = tmp_path / f"queue.{suffix}"
    ws = ["--workspace", str(workspace.root)]
    main(ws + ["review", "export", str(path), "--format", fmt])
    assert "wrote 3 items" in capsys.readouterr().out
    main(ws + ["review", "import", str(path), "--format", fmt, "--queue", "copy"])
    assert "imported 3 new items and 2 review decisions" in capsys.readouterr().out
    store = ReviewStore(workspace.registry)
    accepted = store.candidates("copy", QueueFilter(status="accepted"))
    assert [c.answer for c in accepted] == ["Within 45 days."]
    assert [c.status for c in store.candidates("copy")].count("rejected") == 1
    main(ws + ["review", "import", str(path), "--format", fmt, "--queue", "copy"])
    assert "imported 0 new items and 0 review decisions" in capsys.readouterr().out


def test_import_of_a_broken_file_names_the_record_and_writes_nothing(workspace, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                    + "\n" + json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--workspace", str(workspace.root), "review", "import", str(path), "--queue", "copy"])
    assert exit_.value.code != 0
    assert "bad.jsonl" in capsys.readouterr().err
    assert ReviewStore(workspace.registry).candidates("copy") == []


def test_unknown_format_is_refused(workspace, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--workspace", str(workspace.root), "review", "export", str(tmp_path / "x"), "--format", "excel"])
    assert "excel" in capsys.readouterr().err
