"""Policy rules with a threshold: one fact per customer number, answered by its side of the limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewright.config import BuildSpec
from tunewright.errors import TunewrightError
from tunewright.retrieval.chunks import chunk_document
from tunewright.retrieval.context import oracle_ids
from tunewright.synth.grounded import build_rows

DOC = ("# Rules\n\n## Returns\n- Returns are accepted within 30 days of delivery.\n"
       "- Orders placed before 2 pm ship the same day.\n")
SEED = {"questions": ["Return window?", "How long to return?", "Returns deadline?"], "answer": "Within 30 days.",
        "reference": "30 days"}


def _rule(**changes) -> dict:
    rule = {"quote": "Returns are accepted within 30 days of delivery", "limit": 30, "values": [5, 29, 31, 60],
            "questions": ["Delivered {n} days ago, can I return it?", "It came {n} days ago. Too late to return?",
                          "Return after {n} days?"],
            "at_most": {"answer": "Yes: returns within 30 days, and {n} days is within that.",
                        "reference": "{n} days is within"},
            "over": {"answer": "No: returns only within 30 days, and {n} days is past that.", "reference": "{n} days is past"}}
    rule.update(changes)
    return rule


def _rows(tmp_path: Path, *rules: dict):
    (tmp_path / "doc.md").write_text(DOC)
    spec = BuildSpec(documents=[{"path": "doc.md", "seeds": [SEED], "rules": list(rules)}], wrappers=["{q}"])
    return [r for r in build_rows(spec, lambda p: tmp_path / p) if r.row.meta["fact"].startswith("rule")]


def test_each_value_is_answered_by_its_side_of_the_limit(tmp_path):
    rows = _rows(tmp_path, _rule())
    by_fact: dict[str, set] = {}
    for r in rows:
        by_fact.setdefault(r.row.meta["fact"], set()).add((r.row.answer, r.row.reference))
    # 29 and 30-or-under answer yes; 31 is past 30 even though it is one day from the limit.
    assert by_fact == {
        "rule0.0@5": {("Yes: returns within 30 days, and 5 days is within that.", "5 days is within")},
        "rule0.0@29": {("Yes: returns within 30 days, and 29 days is within that.", "29 days is within")},
        "rule0.0@31": {("No: returns only within 30 days, and 31 days is past that.", "31 days is past")},
        "rule0.0@60": {("No: returns only within 30 days, and 60 days is past that.", "60 days is past")}}
    # Every question names its own number; the held-out pattern is never trained.
    assert all(r.row.meta["fact"].split("@")[1] in r.row.messages[-2].content for r in rows)
    held = {r.row.meta["phrasing"] for r in rows if r.split == "eval"}
    assert len(held) == 1 and not held & {r.row.meta["phrasing"] for r in rows if r.split == "train"}
    assert sum(r.split == "train" for r in rows) == 4 * 2 and sum(r.split == "eval" for r in rows) == 4


def test_values_may_be_written_as_customers_write_them(tmp_path):
    rule = _rule(quote="Orders placed before 2 pm ship the same day", limit=14, values={"11 am": 11, "4:30 pm": 16.5},
                 questions=["Order at {n}, ships today?", "If I buy at {n}, same day?", "At {n}, will it go out?"],
                 at_most={"answer": "Yes, {n} is before 2 pm.", "reference": "{n} is before 2 pm"},
                 over={"answer": "No, an order at {n} ships the next day.", "reference": "ships the next day"})
    answers = {r.row.meta["fact"]: r.row.answer for r in _rows(tmp_path, rule)}
    assert answers == {"rule0.0@11 am": "Yes, 11 am is before 2 pm.", "rule0.0@4:30 pm": "No, an order at 4:30 pm ships the next day."}


def test_a_rule_row_shows_the_passage_that_states_the_rule(tmp_path):
    rows = _rows(tmp_path, _rule())
    (tmp_path / "doc.md").write_text(DOC)
    chunks = chunk_document(tmp_path / "doc.md")
    holding = {c.id for c in chunks if "within 30 days" in c.text}
    # The reference ("29 days is within") is in no passage; the quote finds the one the rule came from.
    assert len(holding) == 1 and all(oracle_ids(r.row, chunks) == holding for r in rows)


@pytest.mark.parametrize("changes,field,message", [
    ({"quote": "Returns are accepted within 90 days"}, "rules.0.quote", "does not appear in doc.md"),
    ({"questions": ["Can I return it?", "Return after {n} days?"]}, "rules.0.questions", "does not name {n}"),
    ({"questions": ["Return {item} after {n} days?", "Back after {n} days?"]}, "rules.0.questions", "names item"),
    ({"over": {"answer": "No: {item} after {n} days."}}, "rules.0.over", "names item"),
    ({"values": [5, 30, 60]}, "rules.0.values", "a value equals the limit 30"),
    ({"values": [5, 10]}, "rules.0.values", "every value is on one side of the limit 30"),
    ({"over": {"answer": "No, {n} days is within reason but past 30."}}, "rules.0.at_most.reference",
     "also found in the other side's answer"),
])
def test_a_rule_that_could_not_teach_the_comparison_is_refused(tmp_path, changes, field, message):
    with pytest.raises(TunewrightError, match=rf"field 'build.documents.0.{field}'.*{message}".replace("{n}", r"\{n\}")):
        _rows(tmp_path, _rule(**changes))
