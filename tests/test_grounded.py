"""The grounded builder: generic, eval phrasings never seen in training, clear errors."""

from pathlib import Path

import pytest

from tunewright.config import BuildSpec
from tunewright.errors import TunewrightError
from tunewright.synth import available_generators
from tunewright.synth.grounded import build_rows

TABLE = "sku,label,price\nA-1,Blue Kettle,20\nB-2,Red Pan,35\n"
DOC = "# Rules\n- Returns are accepted within 30 days.\n"


def _spec(tmp_path: Path, **overrides) -> BuildSpec:
    (tmp_path / "table.csv").write_text(TABLE)
    (tmp_path / "doc.md").write_text(DOC)
    fields = {
        "tables": [{
            "path": "table.csv",
            "columns": {"price": {"questions": ["Price of {label}?", "Cost of {label}?", "What is {label} priced at?"],
                                  "answer": "{label} costs ${price}.", "reference": "${price}"}},
        }],
        "documents": [{"path": "doc.md", "seeds": [{"questions": ["Return window?", "How long to return?", "Returns deadline?"],
                                                     "answer": "Within 30 days.", "reference": "30 days"}]}],
        "wrappers": ["{q}", "Hey, {q}", "{q_lower}"],
    }
    fields.update(overrides)
    return BuildSpec(**fields)


def test_rows_cover_every_fact_with_disjoint_phrasings(tmp_path):
    rows = build_rows(_spec(tmp_path), lambda p: tmp_path / p)
    train = [r for r in rows if r.split == "train"]
    evals = [r for r in rows if r.split == "eval"]
    assert len(evals) == 3  # two products and one seed, one held-out phrasing each
    assert len(train) == 6  # two training phrasings per fact
    train_patterns = {(r.row.meta["fact"], r.row.meta["phrasing"]) for r in train}
    for row in evals:
        assert (row.row.meta["fact"], row.row.meta["phrasing"]) not in train_patterns
        assert row.row.meta["phrasing"] not in {p for f, p in train_patterns if f == row.row.meta["fact"]}
    kettle = [r for r in rows if "Blue Kettle" in r.row.messages[0].content]
    assert all(r.row.reference == "$20" and r.row.answer == "Blue Kettle costs $20." for r in kettle)
    assert any(r.row.messages[0].content.startswith("Hey, ") for r in train)
    assert any(r.row.messages[0].content == r.row.messages[0].content.lower() for r in train)


def test_holdout_is_deterministic_and_seeded(tmp_path):
    first = build_rows(_spec(tmp_path), lambda p: tmp_path / p)
    again = build_rows(_spec(tmp_path), lambda p: tmp_path / p)
    assert [r.row.to_json() for r in first] == [r.row.to_json() for r in again]
    other = [build_rows(_spec(tmp_path, seed=s), lambda p: tmp_path / p) for s in range(1, 6)]
    held = lambda rs: {r.row.meta["phrasing"] for r in rs if r.split == "eval"}  # noqa: E731
    assert any(held(o) != held(first) for o in other)


def test_train_phrasings_caps_rows(tmp_path):
    rows = build_rows(_spec(tmp_path, train_phrasings=1), lambda p: tmp_path / p)
    assert sum(r.split == "train" for r in rows) == 3


def test_unknown_column_names_the_field(tmp_path):
    spec = _spec(tmp_path)
    spec.tables[0].columns["weight"] = spec.tables[0].columns["price"]
    with pytest.raises(TunewrightError, match=r"field 'build.tables.0.columns.weight'.*column 'weight' is not in the table"):
        build_rows(spec, lambda p: tmp_path / p)


def test_pattern_with_unknown_placeholder(tmp_path):
    spec = _spec(tmp_path)
    spec.tables[0].columns["price"].questions.append("Price of {title}?")
    with pytest.raises(TunewrightError, match="unknown columns: title"):
        build_rows(spec, lambda p: tmp_path / p)


def test_ungrounded_seed_is_refused(tmp_path):
    spec = _spec(tmp_path)
    spec.documents[0].seeds[0].reference = "90 days"
    with pytest.raises(TunewrightError, match="'90 days' does not appear in doc.md"):
        build_rows(spec, lambda p: tmp_path / p)


def test_too_few_phrasings_to_hold_one_out(tmp_path):
    spec = _spec(tmp_path, eval_phrasings=3)
    with pytest.raises(TunewrightError, match="needs more than 3 phrasings"):
        build_rows(spec, lambda p: tmp_path / p)


def test_missing_source_file(tmp_path):
    spec = _spec(tmp_path)
    (tmp_path / "table.csv").unlink()
    with pytest.raises(TunewrightError, match="table.csv: source file not found"):
        build_rows(spec, lambda p: tmp_path / p)


def test_wrapper_without_slot_is_rejected():
    with pytest.raises(ValueError, match="no \\{q\\} or \\{q_lower\\} slot"):
        BuildSpec(wrappers=["Hello"])


def test_builder_is_registered():
    assert "grounded-qa" in available_generators()
