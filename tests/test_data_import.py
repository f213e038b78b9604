"""Data import: readers, shape normalisation, dedupe/split, versioned storage and token stats."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from tunewright.data import prepare as prepare_mod
from tunewright.data.normalize import normalise_record
from tunewright.data.prepare import (
    dedupe,
    load_rows,
    prepare_dataset,
    prepare_rows,
    read_split,
    split_rows,
    write_dataset_version,
)
from tunewright.data.readers import READERS, iter_records, register_reader
from tunewright.data.schema import ChatRow
from tunewright.data.stats import dataset_stats, histogram, render_stats
from tunewright.errors import TunewrightError

FIXTURES = Path(__file__).parent / "fixtures_data"


def msgs(row: ChatRow) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in row.messages]


def make_row(user: str, answer: str = "ok", **meta) -> ChatRow:
    return ChatRow(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                   meta=meta)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(TunewrightError) as info:
        load_rows([path])
    return str(info.value)


# --- shapes -----------------------------------------------------------------------------------


def test_chat_shape_keeps_messages_reference_and_extras():
    rows, sources = load_rows([FIXTURES / "chat.jsonl"])
    assert len(rows) == 2
    assert msgs(rows[0]) == [
        ("system", "You are a pricing assistant."),
        ("user", "How much is the Pro plan?"),
        ("assistant", "The Pro plan costs $189 per year."),
    ]
    assert rows[0].reference == "$189"
    assert rows[0].meta["id"] == "c1"
    assert rows[0].meta["source"] == {"file": "chat.jsonl", "line": 1}
    # line 2 is blank, so the second row is line 3
    assert rows[1].meta["source"] == {"file": "chat.jsonl", "line": 3}
    assert rows[1].meta["topic"] == "shipping"
    assert len(rows[1].messages) == 4
    assert sources[0]["rows"] == 2 and len(sources[0]["sha256"]) == 64


def test_instruction_shape_joins_input_and_adds_system():
    rows, _ = load_rows([FIXTURES / "instruction.jsonl"])
    assert msgs(rows[0]) == [("user", "Summarise the refund policy."), ("assistant", "Refunds within 30 days.")]
    assert msgs(rows[1]) == [
        ("system", "You translate."),
        ("user", "Translate to French.\n\nGood morning"),
        ("assistant", "Bonjour"),
    ]
    # an empty input adds nothing; the split column is carried in meta
    assert msgs(rows[2])[0] == ("user", "Name the capital of France.")
    assert rows[2].meta["split"] == "eval"


def test_prompt_completion_shape():
    rows, _ = load_rows([FIXTURES / "prompt_completion.jsonl"])
    assert msgs(rows[0]) == [("user", "2 + 2 ="), ("assistant", "4")]
    assert msgs(rows[1]) == [("system", "Answer briefly."), ("user", "What colour is the sky?"),
                             ("assistant", "Blue.")]
    assert rows[1].reference == "42"


def test_csv_rows_and_line_numbers():
    rows, sources = load_rows([FIXTURES / "rows.csv"])
    assert [msgs(r) for r in rows] == [
        [("user", "Summarise the refund policy."), ("assistant", "Refunds within 30 days.")],
        [("system", "You are a poet."), ("user", "Write a haiku\nabout rain"),
         ("assistant", "Drops on the tin roof\nsoft rhythm")],
        [("user", "Translate to French.\n\nGood morning"), ("assistant", "Bonjour")],
    ]
    # the header is line 1 and the quoted cells of row 2 span lines 3-5
    assert [r.meta["source"]["line"] for r in rows] == [2, 3, 6]
    assert sources[0]["rows"] == 3


def test_csv_messages_column_holds_json():
    rows, _ = load_rows([FIXTURES / "chat_messages.csv"])
    assert msgs(rows[0]) == [("user", "Hi"), ("assistant", "Hello!")]
    assert rows[0].reference == "Hello"


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "prompt": ["a question", "another question"],
        "completion": ["an answer", "another answer"],
        "system": [None, "Be kind."],
    })
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    rows, sources = load_rows([path])
    assert msgs(rows[0]) == [("user", "a question"), ("assistant", "an answer")]
    assert msgs(rows[1])[0] == ("system", "Be kind.")
    assert [r.meta["source"]["line"] for r in rows] == [1, 2]
    assert sources[0]["rows"] == 2

    chat = pa.table({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})
    pq.write_table(chat, tmp_path / "chat.parquet")
    rows, _ = load_rows([tmp_path / "chat.parquet"])
    assert msgs(rows[0]) == [("user", "hi"), ("assistant", "yo")]


def test_adding_a_reader_is_one_registration(tmp_path):
    @register_reader(".tsvtest")
    def read_tsv(path):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            prompt, completion = line.split("\t")
            yield n, {"prompt": prompt, "completion": completion}

    try:
        rows, _ = load_rows([write(tmp_path, "x.tsvtest", "q\ta\n")])
        assert msgs(rows[0]) == [("user", "q"), ("assistant", "a")]
    finally:
        READERS._classes.pop("tsvtest")
    with pytest.raises(ValueError, match="data reader 'csv' is already registered"):
        register_reader(".csv")(read_tsv)  # a second reader for a suffix would silently replace the first


# --- bad input: every error names file, line and field ----------------------------------------


@pytest.mark.parametrize(
    "line, field, fragment",
    [
        ('{"instruction": "do it", "ouput": "done"}', "output", "did you mean 'output'"),
        ('{"instruction": "do it"}', "output", "missing"),
        ('{"prompt": "q", "completion": 3}', "completion", "must be text"),
        ('{"prompt": "q", "completion": "   "}', "completion", "must not be empty"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}',
         "messages[1].role", "unknown role 'bot'"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',
         "messages[1].content", "must not be empty"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}',
         "messages[1].content", "missing"),
        ('{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}',
         "messages", "first non-system message must be from the user"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}, '
         '{"role": "assistant", "content": "b"}]}', "messages", "alternate"),
        ('{"messages": "not a list"}', "messages", "not valid JSON"),
        ('{"messages": [1, 2]}', "messages[0]", "must be an object"),
        ('{"prompt": "q", "completion": "a", "meta": [1]}', "meta", "must be an object"),
        ('{"prompt": "q", "completion": "a", "output": "b"}', "output", "different shapes"),
    ],
)
def test_bad_record_names_file_line_and_field(tmp_path, line, field, fragment):
    path = write(tmp_path, "bad.jsonl", '{"prompt": "fine", "completion": "row"}\n' + line + "\n")
    message = load_error(path)
    assert message.startswith(f"{path}:2: field '{field}': "), message
    assert fragment in message


def test_no_recognisable_shape_lists_accepted_shapes(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"question": "q", "answer": "a"}\n')
    message = load_error(path)
    assert message.startswith(f"{path}:1: ")
    assert "found fields: answer, question" in message
    assert "messages" in message and "instruction + output" in message and "prompt + completion" in message


def test_malformed_json(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"prompt": "q", "completion": "a"}\n\n{"prompt": "q",\n')
    message = load_error(path)
    assert message.startswith(f"{path}:3: malformed JSON: ")
    assert "Expecting property name" in message


def test_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path, "bad.jsonl", '["prompt", "completion"]\n')
    assert load_error(path) == f"{path}:1: expected a JSON object per line, got an array"


def test_non_utf8_bytes_report_the_line(tmp_path):
    good = b'{"prompt": "q", "completion": "a"}\n'
    path = write(tmp_path, "latin1.jsonl", good + good + b'{"prompt": "caf\xe9", "completion": "a"}\n')
    message = load_error(path)
    assert message.startswith(f"{path}:3: not valid UTF-8")
    csv_path = write(tmp_path, "latin1.csv", b"prompt,completion\nq,a\ncaf\xe9,a\n")
    assert load_error(csv_path).startswith(f"{csv_path}:3: not valid UTF-8")


@pytest.mark.parametrize("name, content", [
    ("empty.jsonl", b""), ("blank.jsonl", b"\n  \n"), ("empty.csv", b""), ("header_only.csv", b"prompt,completion\n"),
])
def test_empty_file(tmp_path, name, content):
    path = write(tmp_path, name, content)
    assert load_error(path) == f"{path}: file has no rows"


def test_empty_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    assert load_error(path) == f"{path}: file has no rows"


def test_unreadable_parquet(tmp_path):
    path = write(tmp_path, "broken.parquet", b"this is not parquet at all")
    message = load_error(path)
    assert message.startswith(f"{path}: cannot read Parquet file")


def test_unknown_suffix_lists_supported(tmp_path):
    path = write(tmp_path, "data.xlsx", b"whatever")
    message = load_error(path)
    assert message.startswith(f"{path}: unsupported file type .xlsx; supported: ")
    for suffix in (".csv", ".jsonl", ".parquet"):
        assert suffix in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    assert load_error(path) == f"{path}: file not found"


def test_csv_row_with_wrong_column_count(tmp_path):
    path = write(tmp_path, "bad.csv", "prompt,completion\nq,a\nq,a,extra\n")
    assert load_error(path) == f"{path}:3: row has 3 columns but the header has 2"


def test_csv_bad_value_names_its_line(tmp_path):
    path = write(tmp_path, "bad.csv", "prompt,completion\nq,a\nq2,\n")
    assert load_error(path) == f"{path}:3: field 'completion': must not be empty"


def test_first_error_raises_even_after_good_files(tmp_path):
    bad = write(tmp_path, "bad.jsonl", '{"prompt": "q"}\n')
    message = load_error_many([FIXTURES / "chat.jsonl", bad])
    assert message.startswith(f"{bad}:1: field 'completion': missing")


def load_error_many(paths):
    with pytest.raises(TunewrightError) as info:
        load_rows(paths)
    return str(info.value)


def test_normalise_record_directly():
    row = normalise_record({"prompt": "q", "completion": "a", "source": "web"}, file=Path("/x/y.jsonl"), line=7)
    assert row.meta["source"] == {"file": "y.jsonl", "line": 7}
    assert row.meta["user_source"] == "web"


# --- dedupe and split --------------------------------------------------------------------------


def test_dedupe_keeps_first_and_counts():
    rows = [make_row("a", id=1), make_row("b"), make_row("a", id=2), make_row("a", "different answer"),
            make_row("b")]
    kept, removed = dedupe(rows)
    assert removed == 2
    assert [(r.messages[0].content, r.answer) for r in kept] == [("a", "ok"), ("b", "ok"), ("a", "different answer")]
    assert kept[0].meta["id"] == 1


def test_prepare_dataset_counts_duplicates_across_files(tmp_path):
    copy = write(tmp_path, "copy.jsonl", (FIXTURES / "instruction.jsonl").read_text())
    prepared = prepare_dataset([FIXTURES / "instruction.jsonl", copy], eval_fraction=0.0)
    assert prepared.n_duplicates == 3
    assert (len(prepared.train), len(prepared.eval)) == (2, 1)  # one row is preassigned to eval
    assert [s["rows"] for s in prepared.source_files] == [3, 3]


def test_split_is_deterministic_and_sized():
    rows = [make_row(f"q{i}") for i in range(50)]
    train, eval_ = split_rows(rows, 0.2, seed=1)
    assert (len(train), len(eval_)) == (40, 10)
    assert split_rows(rows, 0.2, seed=1) == (train, eval_)
    _, other = split_rows(rows, 0.2, seed=2)
    assert [r.messages[0].content for r in other] != [r.messages[0].content for r in eval_]
    # order inside each split follows the input order
    for part in (train, eval_):
        assert [rows.index(r) for r in part] == sorted(rows.index(r) for r in part)
    assert {id(r) for r in train} | {id(r) for r in eval_} == {id(r) for r in rows}


def test_split_small_sets():
    two = [make_row("a"), make_row("b")]
    assert [len(p) for p in split_rows(two, 0.1, seed=0)] == [1, 1]  # at least one eval row
    assert [len(p) for p in split_rows(two, 0.0, seed=0)] == [2, 0]
    assert [len(p) for p in split_rows(two[:1], 0.5, seed=0)] == [1, 0]
    assert [len(p) for p in split_rows(two, 0.9, seed=0)] == [1, 1]  # training keeps a row
    with pytest.raises(TunewrightError, match="eval_fraction"):
        split_rows(two, 1.0, seed=0)


def test_preassigned_splits_are_respected():
    rows = [make_row(f"q{i}", split="eval" if i < 3 else ("train" if i < 10 else None)) for i in range(20)]
    for seed in range(5):
        train, eval_ = split_rows(rows, 0.25, seed=seed)
        assert len(eval_) == 5  # round(20 * 0.25): 3 preassigned plus 2 picked from the 10 free rows
        assert rows[:3] == eval_[:3]
        assert all(r in train for r in rows[3:10])
    # more preassigned eval rows than the target: nothing extra is picked
    train, eval_ = split_rows(rows, 0.05, seed=0)
    assert len(eval_) == 3


def test_content_hash_is_stable_and_sensitive():
    paths = [FIXTURES / "chat.jsonl", FIXTURES / "instruction.jsonl", FIXTURES / "prompt_completion.jsonl"]
    a = prepare_dataset(paths, eval_fraction=0.3, seed=0)
    b = prepare_dataset(paths, eval_fraction=0.3, seed=0)
    assert a.content_sha256 == b.content_sha256
    assert len(a.content_sha256) == 64 and a.version == a.content_sha256[:12]
    seeds = {prepare_dataset(paths, eval_fraction=0.3, seed=s).content_sha256 for s in range(6)}
    assert len(seeds) > 1
    rows, sources = load_rows(paths)
    assert prepare_rows(rows, sources, eval_fraction=0.3, seed=0).content_sha256 == a.content_sha256


def test_boundary_move_between_splits_changes_hash():
    rows = [make_row("a"), make_row("b")]
    one = prepare_mod.content_hash(rows[:1], rows[1:])
    two = prepare_mod.content_hash(rows, [])
    assert one != two


def test_prepare_rows_rejects_empty():
    with pytest.raises(TunewrightError, match="no rows"):
        prepare_rows([], [], eval_fraction=0.1, seed=0)


# --- versioned storage -------------------------------------------------------------------------


def test_write_and_read_version(tmp_path):
    prepared = prepare_dataset([FIXTURES / "chat.jsonl", FIXTURES / "instruction.jsonl"], eval_fraction=0.4, seed=3)
    folder = write_dataset_version(tmp_path / "datasets", prepared, {"name": "demo", "seed": 3})
    assert folder == tmp_path / "datasets" / prepared.version
    assert sorted(p.name for p in folder.iterdir()) == ["eval.jsonl", "manifest.json", "train.jsonl"]
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == [prepared.version]  # no temp folders
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["content_sha256"] == prepared.content_sha256
    assert manifest["counts"] == {"train": len(prepared.train), "eval": len(prepared.eval), "duplicates_removed": 0}
    assert manifest["spec"] == {"name": "demo", "seed": 3}
    assert [s["rows"] for s in manifest["source_files"]] == [2, 3]
    assert read_split(folder, "train") == prepared.train
    assert read_split(folder, "eval") == prepared.eval

    mtime = os.stat(folder / "manifest.json").st_mtime_ns
    assert write_dataset_version(tmp_path / "datasets", prepared, {"name": "demo"}) == folder
    assert os.stat(folder / "manifest.json").st_mtime_ns == mtime


def test_empty_eval_split_round_trips(tmp_path):
    prepared = prepare_dataset([FIXTURES / "prompt_completion.jsonl"], eval_fraction=0.0)
    folder = write_dataset_version(tmp_path, prepared, {})
    assert read_split(folder, "eval") == []
    with pytest.raises(TunewrightError, match="field 'split'"):
        read_split(folder, "test")


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    prepared = prepare_dataset([FIXTURES / "chat.jsonl"], eval_fraction=0.5)
    real = prepare_mod.atomic_write_bytes
    calls = []

    def failing(path, data):
        calls.append(Path(path).name)
        if Path(path).name == "eval.jsonl":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(prepare_mod, "atomic_write_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        write_dataset_version(tmp_path / "datasets", prepared, {})
    assert calls == ["train.jsonl", "eval.jsonl"]  # the failure really happened mid-write
    assert not (tmp_path / "datasets" / prepared.version).exists()
    assert list((tmp_path / "datasets").iterdir()) == []

    monkeypatch.setattr(prepare_mod, "atomic_write_bytes", real)
    folder = write_dataset_version(tmp_path / "datasets", prepared, {})
    assert read_split(folder, "train") == prepared.train


def test_read_split_reports_corrupt_rows(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    with pytest.raises(TunewrightError) as info:
        read_split(folder, "train")
    assert str(info.value).startswith(f"{folder / 'train.jsonl'}:1: field 'messages': ")


# --- stats -------------------------------------------------------------------------------------


def test_stats_on_known_tokenizer(tiny_tokenizer):
    # every message renders to 3 + words tokens: <|im_start|>, role, words..., <|im_end|>
    rows = [
        make_row("hello world", "yes"),                                  # (3+2) + (3+1) = 9
        make_row("the price is", "189 dollars exactly"),                 # (3+3) + (3+3) = 12
        ChatRow(messages=[{"role": "system", "content": "be brief"},
                          {"role": "user", "content": "how"},
                          {"role": "assistant", "content": "no"}]),      # 5 + 4 + 4 = 13
        make_row("a b c d e f g h i j k l m n o p q r s t", "done"),     # 23 + 4 = 27
    ]
    stats = dataset_stats(rows, tiny_tokenizer)
    assert stats.rows == 4
    assert stats.turns == 8
    assert stats.total_tokens == 9 + 12 + 13 + 27
    assert (stats.min_tokens, stats.max_tokens) == (9, 27)
    assert stats.mean_tokens == pytest.approx(61 / 4)
    assert (stats.p50_tokens, stats.p95_tokens) == (12, 27)
    assert stats.chars == sum(len(m.content) for r in rows for m in r.messages)
    assert stats.histogram == [(9, 10, 1), (11, 12, 1), (13, 14, 1), (15, 16, 0), (17, 18, 0),
                               (19, 20, 0), (21, 22, 0), (23, 24, 0), (25, 26, 0), (27, 28, 1)]
    assert sum(n for _, _, n in stats.histogram) == stats.rows


def test_histogram_edges():
    assert histogram([]) == []
    assert histogram([5, 5, 5]) == [(5, 5, 3)]
    buckets = histogram(list(range(100)))
    assert len(buckets) == 10 and all(n == 10 for _, _, n in buckets)


def test_render_stats(tiny_tokenizer):
    rows, _ = load_rows([FIXTURES / "instruction.jsonl"])
    stats = dataset_stats(rows, tiny_tokenizer)
    buffer = io.StringIO()
    render_stats(stats, Console(file=buffer, width=100, color_system=None))
    out = buffer.getvalue()
    assert "rows" in out and "p95" in out and str(stats.total_tokens) in out
    assert "█" in out


def test_stats_of_no_rows(tiny_tokenizer):
    stats = dataset_stats([], tiny_tokenizer)
    assert (stats.rows, stats.total_tokens, stats.histogram) == (0, 0, [])
    render_stats(stats, Console(file=io.StringIO()))


def test_iter_records_is_lazy_but_checks_path_early(tmp_path):
    with pytest.raises(TunewrightError, match="file not found"):
        iter_records(tmp_path / "missing.csv")
    records = list(iter_records(FIXTURES / "rows.csv"))
    assert [n for n, _ in records] == [2, 3, 6]
    assert all(isinstance(v, str) for _, r in records for v in r.values())
