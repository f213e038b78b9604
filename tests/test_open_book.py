"""Open-book rows (RAFT) and the retrieval an open-book adapter gets wherever it answers."""

from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import dataclass

import pytest

from tunewright.data.schema import ChatRow
from tunewright.errors import TunewrightError
from tunewright.retrieval.chunks import Chunk
from tunewright.retrieval.context import (CONFIG_FILE, INSTRUCTION, RetrievalConfig, StaleIndexWarning, open_book_row,
                                          open_book_rows, oracle_ids, retriever_for, with_records)

CHUNKS = [Chunk("shop.csv:2", "sku: A-1; label: Blue Kettle; price: 20", {"file": "shop.csv", "line": 2}),
          Chunk("shop.csv:3", "sku: B-2; label: Red Pan; price: 35", {"file": "shop.csv", "line": 3}),
          Chunk("rules.md:3", "Returns: Returns are accepted within 30 days.", {"file": "rules.md", "line": 3}),
          Chunk("rules.md:4", "Returns: Opened kettles cost 5 percent to return.", {"file": "rules.md", "line": 4}),
          Chunk("rules.md:7", "Contact: Call 555-0100.", {"file": "rules.md", "line": 7})]


@dataclass
class _Hit:
    chunk: Chunk


class FixedIndex:
    """Retrieval that always ranks the chunks in one given order, so each test controls the misses."""

    def __init__(self, order):
        self.chunks, self.order = CHUNKS, order

    def search(self, query, k):
        return [_Hit(CHUNKS[i]) for i in self.order[:k]]


def _row(question, answer, reference, source, split="train"):
    return ChatRow(messages=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                   reference=reference, meta={"source": source, "split": split})


PRICE = _row("Price of Red Pan?", "Red Pan costs $35.", "$35", {"file": "shop.csv", "line": 3})
RETURNS = _row("Return window?", "Within 30 days.", "30 days", {"file": "rules.md"})
ABSENT = _row("Do you sell boats?", "Sorry, we don't sell boats.", None, {"recipe": "build.absent"})


def test_oracles_come_from_the_row_source_line_or_the_reference_in_its_document():
    assert oracle_ids(PRICE, CHUNKS) == {"shop.csv:3"}
    assert oracle_ids(RETURNS, CHUNKS) == {"rules.md:3"}
    assert oracle_ids(ABSENT, CHUNKS) == set()
    # A fact across rows (the cheapest item) has no one chunk: its winning row is never put in, so the
    # model cannot learn "the answer is whichever record is shown".
    cheapest = _row("Cheapest item?", "The Blue Kettle is our cheapest at $20.", "Blue Kettle",
                    {"file": "shop.csv", "line": 2, "across_rows": True})
    assert oracle_ids(cheapest, CHUNKS) == set()
    for seed in range(5):
        row = open_book_row(cheapest, FixedIndex([1, 2, 0, 3, 4]), k=2, rng=random.Random(seed), oracle_rate=1.0)
        assert row.meta["retrieved"] == ["shop.csv:3", "rules.md:3"] and row.meta["placement"] == "retrieved"


def test_raft_rows_put_the_oracle_in_or_take_it_out_and_eval_rows_keep_what_retrieval_gave():
    missed = FixedIndex([0, 2, 3, 4, 1])  # retrieval ranks the Red Pan row last
    for seed in range(5):
        row = open_book_row(PRICE, missed, k=3, rng=random.Random(seed), oracle_rate=1.0)
        assert "shop.csv:3" in row.meta["retrieved"] and len(row.meta["retrieved"]) == 3
        assert row.meta["placement"] == "oracle inserted"
        assert "price: 35" in row.messages[0].content and row.messages[0].role == "system"
    found = FixedIndex([1, 0, 2, 3, 4])
    row = open_book_row(PRICE, found, k=3, rng=random.Random(0), oracle_rate=0.0)
    assert row.meta["retrieved"] == ["shop.csv:2", "rules.md:3", "rules.md:4"] and row.meta["placement"] == "oracle removed"
    held = open_book_row(_row("Price of Red Pan?", "Red Pan costs $35.", "$35", PRICE.meta["source"], "eval"), missed,
                         k=3, rng=None, oracle_rate=1.0)
    assert held.meta["retrieved"] == ["shop.csv:2", "rules.md:3", "rules.md:4"] and held.meta["placement"] == "retrieved"
    # The target and the question are untouched; only the system message is new.
    assert [m.content for m in held.messages[1:]] == ["Price of Red Pan?", "Red Pan costs $35."]
    assert held.messages[0].content.startswith(INSTRUCTION) and "[1] sku: A-1" in held.messages[0].content
    no_oracle = open_book_row(ABSENT, found, k=2, rng=random.Random(0), oracle_rate=1.0)
    assert no_oracle.meta["retrieved"] == ["shop.csv:3", "shop.csv:2"]


def test_rate_of_oracle_rows_follows_oracle_rate():
    index = FixedIndex([0, 2, 3, 4, 1])
    rng = random.Random(3)
    rows = [open_book_row(PRICE, index, k=3, rng=rng, oracle_rate=0.7) for _ in range(400)]
    share = sum("shop.csv:3" in r.meta["retrieved"] for r in rows) / len(rows)
    assert 0.62 < share < 0.78


def test_shuffled_training_rows_show_the_oracle_in_every_place_and_eval_rows_keep_retrieval_order():
    found = FixedIndex([1, 0, 2, 3, 4])  # the Red Pan row ranks first, as a template question's would
    rng = random.Random(5)
    rows = [open_book_row(PRICE, found, k=3, rng=rng, oracle_rate=1.0, shuffle=True) for _ in range(300)]
    places = Counter(r.meta["retrieved"].index("shop.csv:3") for r in rows)
    assert set(places) == {0, 1, 2} and min(places.values()) > 70  # about 100 each
    assert all(sorted(r.meta["retrieved"]) == ["rules.md:3", "shop.csv:2", "shop.csv:3"] for r in rows)
    # The order in the prompt is the order recorded.
    text = {c.id: c.text for c in CHUNKS}
    for row in rows[:10]:
        listed = "\n".join(f"[{n}] {text[cid]}" for n, cid in enumerate(row.meta["retrieved"], start=1))
        assert listed in row.messages[0].content
    unshuffled = open_book_row(PRICE, found, k=3, rng=random.Random(5), oracle_rate=1.0)
    assert unshuffled.meta["retrieved"] == ["shop.csv:3", "shop.csv:2", "rules.md:3"]
    held = _row("Price of Red Pan?", "Red Pan costs $35.", "$35", PRICE.meta["source"], "eval")
    assert open_book_rows([held], found, k=3, oracle_rate=1.0, seed=0, shuffle=True)[0].meta["retrieved"] == \
        ["shop.csv:3", "shop.csv:2", "rules.md:3"]


def test_records_go_before_a_callers_own_system_message():
    messages = with_records([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], ["a", "b"])
    assert messages[0]["content"].endswith("[1] a\n[2] b\n\nBe brief.") and len(messages) == 2


def test_retrieval_config_round_trip_and_errors(tmp_path):
    config = RetrievalConfig(index="shop-index", trained_version="abc123", index_sha256="f" * 64, k=3)
    config.save(tmp_path)
    assert RetrievalConfig.read(tmp_path) == config
    readme = (tmp_path / "RETRIEVAL.md").read_text()
    assert "top 3 chunks" in readme and INSTRUCTION in readme
    assert RetrievalConfig.read(tmp_path / "elsewhere") is None and RetrievalConfig.read(None) is None
    (tmp_path / CONFIG_FILE).write_text('{"index": "x"}')
    with pytest.raises(TunewrightError, match=r"tunewright_retrieval.json: cannot read the adapter's retrieval config"):
        RetrievalConfig.read(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"index": "x", "trained_version": "1", "index_sha256": "f", "k": 3, "layout": "v9"}')
    with pytest.raises(TunewrightError, match=r"field 'layout'.*layout 'v9' is not one this version renders \(records-v1\)"):
        RetrievalConfig.read(tmp_path)


TABLE = "sku,label,price\nA-1,Blue Kettle,20\nB-2,Red Pan,35\n"
RULES = "# Rules\n\n## Returns\n- Returns are accepted within 30 days.\n\n## Contact\n- Call 555-0100.\n"


def _open_book_workspace(tmp_path, tiny_model_dir):
    from tunewright.config import BuildSpec, Recipe, TrainSpec
    from tunewright.workspace import Workspace

    build = BuildSpec(
        tables=[{"path": "shop.csv", "columns": {"price": {
            "questions": ["Price of {label}?", "Cost of {label}?", "What is {label} priced at?"],
            "answer": "{label} costs ${price}.", "reference": "${price}"}}}],
        documents=[{"path": "rules.md", "seeds": [{"questions": ["Return window?", "How long to return?", "Returns deadline?"],
                                                   "answer": "Within 30 days.", "reference": "30 days"}]}],
        open_book={"oracle_rate": 1.0})
    recipe = Recipe(name="shop", base_model=str(tiny_model_dir), build=build, retrieval={"k": 2},
                    train=TrainSpec(r=4, alpha=8, batch_size=4, max_steps=1, max_length=512))
    workspace = Workspace.init(tmp_path / "ws", recipe)
    (workspace.root / "shop.csv").write_text(TABLE)
    (workspace.root / "rules.md").write_text(RULES)
    return workspace


def test_open_book_dataset_adapter_and_answers_read_the_newest_index(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from tunewright.data.api import load_split
    from tunewright.synth.build import build_dataset
    from tunewright.retrieval.api import build_workspace_index
    from tunewright.serve.batch import generate_file
    from tunewright.train.api import train

    workspace = _open_book_workspace(tmp_path, tiny_model_dir)
    dataset = build_dataset(workspace)
    _, rows = load_split(workspace, None, "train")
    assert all(r.messages[0].role == "system" and r.meta["retrieved"] for r in rows)
    assert all(set(r.meta["oracle"]) <= set(r.meta["retrieved"]) for r in rows)  # oracle_rate 1.0
    [index] = workspace.registry.list_indexes()
    assert dataset.spec["open_book"]["index"] == f"{index.name}@{index.version}"
    edges = workspace.registry.lineage("dataset", str(dataset.id))
    assert any(e["parent_kind"] == "index" and e["parent_id"] == str(index.id) for e in edges)

    _, adapter, _ = train(workspace)
    from tunewright.govern.lineage import build_lineage

    graph = build_lineage(workspace.registry, "shop")
    index_key = f"index:{index.id}"
    assert (index_key, f"dataset:{dataset.id}", "context_for") in graph.edges
    assert {parent for parent, child, _ in graph.edges if child == index_key} == {
        f"source_file:{s['sha256']}" for s in index.source_files}
    config = RetrievalConfig.read(adapter.path)
    assert config.index == index.name and config.trained_version == index.version and config.k == 2

    asked = []
    monkeypatch.setattr("tunewright.serve.batch.generate_responses",
                        lambda model, tokenizer, conversations, **kw: asked.extend(conversations) or ["ok"] * len(conversations))
    prompts = tmp_path / "q.jsonl"
    prompts.write_text('{"prompt": "How much is the Red Pan?"}\n')
    generate_file(workspace, model_ref="shop", input_path=prompts, output_path=tmp_path / "a.jsonl")
    assert "price: 35" in asked[0][0]["content"] and asked[0][-1]["content"] == "How much is the Red Pan?"

    # A price change: without a rebuild the answers would read the old price, so it is named...
    (workspace.root / "shop.csv").write_text(TABLE.replace("35", "39"))
    with pytest.warns(StaleIndexWarning, match="shop.csv changed since it was built"):
        retriever_for(workspace, adapter.path)
    with pytest.raises(TunewrightError, match="older than its sources: shop.csv"):
        retriever_for(workspace, adapter.path, refuse_stale=True)
    from helpers import run_cli

    code, _, err = run_cli(["-w", str(workspace.root), "generate", "--model", "shop", "-i", str(prompts),
                            "-o", str(tmp_path / "stale.jsonl")], capsys)
    assert code == 0 and "warning: index shop-index@" in err and "shop.csv changed since it was built" in err
    # ...and one index build later the same adapter reads the new price, no retraining.
    build_workspace_index(workspace)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleIndexWarning)
        fresh = retriever_for(workspace, adapter.path)
    assert any("price: 39" in text for text in fresh.chunks_for("How much is the Red Pan?"))
    # Undoing the edit needs no rebuild: the version built from those very files is used again.
    (workspace.root / "shop.csv").write_text(TABLE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleIndexWarning)
        back = retriever_for(workspace, adapter.path)
    assert back.index_ref == f"{index.name}@{index.version}"
    assert any("price: 35" in text for text in back.chunks_for("How much is the Red Pan?"))
    base_asked = len(asked)
    generate_file(workspace, model_ref="base", input_path=prompts, output_path=tmp_path / "b.jsonl")
    assert asked[base_asked:] == [[{"role": "user", "content": "How much is the Red Pan?"}]]  # the base: no records


def test_an_adapter_whose_index_is_not_registered_gets_one_clear_error(tmp_path, tiny_model_dir):
    from tunewright.config import Recipe
    from tunewright.errors import NotFoundError
    from tunewright.workspace import Workspace

    workspace = Workspace.init(tmp_path / "ws", Recipe(name="shop", base_model=str(tiny_model_dir)))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    RetrievalConfig(index="gone-index", trained_version="abc", index_sha256="f" * 64, k=3).save(adapter)
    with pytest.raises(NotFoundError, match="index 'gone-index' not found"):
        retriever_for(workspace, adapter)
    assert retriever_for(workspace, tmp_path) is None  # a closed-book folder: nothing to retrieve


def test_source_hashes_are_read_again_only_when_a_file_changes(tmp_path, monkeypatch):
    import os

    from tunewright.retrieval import context

    from tunewright import io

    calls = []

    monkeypatch.setattr(io, "sha256_file", lambda path: calls.append(path) or f"hash of {path.read_text()}")
    source = tmp_path / "shop.csv"
    source.write_text(TABLE)
    assert context.hash_unless_unchanged(source) == f"hash of {TABLE}"  # just written: always read
    assert context.hash_unless_unchanged(source) == f"hash of {TABLE}" and len(calls) == 2
    old = source.stat().st_mtime - 60
    os.utime(source, (old, old))
    for _ in range(3):
        assert context.hash_unless_unchanged(source) == f"hash of {TABLE}"
    assert len(calls) == 3  # settled and unchanged: read once
    source.write_text(TABLE.replace("35", "39"))  # same size; a new modification time
    os.utime(source, (old + 1, old + 1))
    assert context.hash_unless_unchanged(source) == f"hash of {TABLE.replace('35', '39')}" and len(calls) == 4


def test_imported_rows_get_records_and_train_an_open_book_adapter(tmp_path, tiny_model_dir, capsys):
    """`data open-book`: rows from elsewhere (imported, aligned) carry the records retrieval finds for
    their last user message, in a new version whose parents are the rows and the index; the adapter
    trained on it is open-book, and a second run with nothing changed registers nothing."""
    from helpers import run_cli, write_jsonl
    from tunewright.data.api import import_files, load_split
    from tunewright.synth.build import open_book_dataset
    from tunewright.train.api import train

    workspace = _open_book_workspace(tmp_path, tiny_model_dir)
    asked = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
              "meta": {"split": split}}
             for q, a, split in (("what does the red pan cost", "It costs $35.", "train"),
                                 ("can I still return it after 3 weeks", "Yes, within 30 days.", "train"),
                                 ("blue kettle price?", "It costs $20.", "eval"))]
    source = import_files(workspace, [write_jsonl(tmp_path / "chats.jsonl", asked)], name="chats")
    result = open_book_dataset(workspace, "chats")
    assert result.created and result.record.name == "chats-open-book" and result.source.id == source.id
    [index] = workspace.registry.list_indexes()
    assert result.record.spec["open_book"] == {"index": f"{index.name}@{index.version}", "index_sha256": index.sha256,
                                               "k": 2}
    assert result.record.spec["parent"]["spec"] == source.spec
    edges = {(e["parent_kind"], e["parent_id"]) for e in workspace.registry.lineage("dataset", str(result.record.id))
             if (e["child_kind"], e["child_id"]) == ("dataset", str(result.record.id))}
    assert edges == {("dataset", str(source.id)), ("index", str(index.id))}
    _, train_rows = load_split(workspace, "chats-open-book", "train")
    _, eval_rows = load_split(workspace, "chats-open-book", "eval")
    assert [r.messages[-2].content for r in train_rows + eval_rows] == [c["messages"][0]["content"] for c in asked]
    # The records are what retrieval returns for each question (a row without a source has no oracle
    # to place): the Red Pan's row for its price, the returns line for the return question.
    assert "Red Pan; price: 35" in train_rows[0].messages[0].content.split("[2]")[0]
    assert "30 days" in train_rows[1].messages[0].content
    assert "Blue Kettle; price: 20" in eval_rows[0].messages[0].content.split("[2]")[0]
    assert all(r.meta["retrieved"] and r.meta["placement"] == "retrieved" for r in train_rows + eval_rows)
    again = open_book_dataset(workspace, "chats")
    assert not again.created and again.record.id == result.record.id

    code, out, _ = run_cli(["-w", workspace.root, "data", "open-book", "chats"], capsys)
    assert code == 0 and "nothing changed" in out
    _, adapter, _ = train(workspace, dataset="chats-open-book")
    config = RetrievalConfig.read(adapter.path)
    assert (config.index, config.trained_version, config.k) == (index.name, index.version, 2)


def test_open_book_refuses_media_rows_rows_with_records_and_unknown_datasets(tmp_path, tiny_model_dir, capsys):
    from helpers import run_cli, write_jsonl
    from PIL import Image
    from tunewright.data.api import import_files

    workspace = _open_book_workspace(tmp_path, tiny_model_dir)
    Image.new("RGB", (20, 10), (200, 0, 0)).save(tmp_path / "tag.png")
    text = {"messages": [{"role": "user", "content": "Price of Red Pan?"}, {"role": "assistant", "content": "$35."}]}
    photo = {"messages": [{"role": "user", "content": [{"type": "image", "image": "tag.png"},
                                                       {"type": "text", "text": "how much?"}]},
                          {"role": "assistant", "content": "$35."}]}
    import_files(workspace, [write_jsonl(tmp_path / "photos.jsonl", [text, photo])], name="photos", eval_fraction=0.0)
    ws = workspace.root
    code, _, err = run_cli(["-w", ws, "data", "open-book", "photos"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "train.jsonl:2" in err and "messages" in err and "tunewright data align" in err
    assert not (ws / "datasets" / "photos-open-book").exists()

    import_files(workspace, [write_jsonl(tmp_path / "text.jsonl", [text])], name="text", eval_fraction=0.0)
    assert run_cli(["-w", ws, "data", "open-book", "text"], capsys)[0] == 0
    code, _, err = run_cli(["-w", ws, "data", "open-book", "text-open-book"], capsys)
    assert code == 2 and "already carries records (index shop-index@" in err
    code, _, err = run_cli(["-w", ws, "data", "open-book", "nope"], capsys)
    assert code == 2 and "nope" in err


def test_an_open_book_version_of_aligned_rows_keeps_their_alignment():
    from types import SimpleNamespace

    from tunewright.align.adapter import AlignmentConfig

    aligned = {"kind": "align", "layout": "aligned-v1", "engines": {
        "audio": {"engine": "faster-whisper", "settings": {"beam_size": 1}}}}
    record = SimpleNamespace(name="m-aligned-open-book", version="v2", spec={
        "kind": "open-book", "open_book": {"index": "i@1", "index_sha256": "0" * 64, "k": 2},
        "parent": {"dataset": "m-aligned", "version": "v1", "id": 3, "spec": aligned}})
    config = AlignmentConfig.from_dataset(record)
    assert config.engines == {"audio": "faster-whisper"} and config.settings == {"faster-whisper": {"beam_size": 1}}
    assert config.dataset == "m-aligned-open-book@v2"  # the version the adapter trained on
    plain = SimpleNamespace(name="t", version="1", spec={"kind": "open-book", "parent": {"spec": {"kind": "import"}}})
    assert AlignmentConfig.from_dataset(plain) is None
