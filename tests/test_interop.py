"""Review export/import: Label Studio, Argilla, chat JSONL and Parquet round trips and bad input."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewright.data.normalize import normalise_record
from tunewright.errors import NotFoundError, TunewrightError
from tunewright.review.interop import (FORMATS, ImportedDecision, ImportedItem, candidate_items, export_candidates,
                                       import_items, label_studio_config)
from tunewright.review.records import CandidateRecord, ReviewRecord

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)

LAMP = [{"role": "user", "content": "How much is the lamp?"}, {"role": "assistant", "content": "It costs $40."}]
LAMP_FIXED = [LAMP[0], {"role": "assistant", "content": "It costs $45."}]
RETURNS = [
    {"role": "system", "content": "You are the shop's assistant."},
    {"role": "user", "content": "Can I return a lamp?"},
    {"role": "assistant", "content": "Yes, within 30 days."},
    {"role": "user", "content": "With no receipt?"},
    {"role": "assistant", "content": "Yes, for store credit."},
]
RETURNS_ORIGINAL = [*RETURNS[:-1], {"role": "assistant", "content": "No."}]


def candidate(id: int, messages: list, **kw) -> CandidateRecord:
    fields = dict(queue="shop", round=1, original=messages, reference=None,
                  provenance={"generator": "qa", "teacher_model": "teacher", "params": {"temperature": 0.7}},
                  flags=[], judge_score=4, topic="lamps", generator="qa", status="pending", created_at=T0)
    fields.update(kw)
    return CandidateRecord(id=id, messages=messages, **fields)


def review(id: int, item: int, who: str, decision: str, *, before: list, minutes: int, **kw) -> ReviewRecord:
    fields = dict(rating=None, reasons=[], note="", after=None, seconds=12.0)
    fields.update(kw)
    return ReviewRecord(id=id, candidate_id=item, reviewer=who, decision=decision, before=before,
                        created_at=T0 + timedelta(minutes=minutes), **fields)


@pytest.fixture
def queue() -> tuple[list[CandidateRecord], list[ReviewRecord]]:
    candidates = [
        candidate(1, LAMP, reference="$45", status="rejected"),
        candidate(2, RETURNS, original=RETURNS_ORIGINAL, status="accepted", topic=None, judge_score=None,
                  flags=[{"filter": "length", "reason": "short answer"}]),
        candidate(3, [{"role": "user", "content": "Hi — ça va?"},
                      {"role": "assistant", "content": "Très bien 🙂"}]),
    ]
    reviews = [
        review(1, 1, "bob", "accept", before=LAMP, minutes=1, rating=5),  # superseded by review 4
        review(2, 1, "alice", "accept", before=LAMP, minutes=2, rating=4),
        review(3, 2, "alice", "accept", before=RETURNS_ORIGINAL, minutes=3, after=RETURNS, rating=5,
               note="fixed the last turn"),
        review(4, 1, "bob", "reject", before=LAMP, minutes=4, rating=2, reasons=["wrong_fact", "tone"],
               note="price is $45", after=LAMP_FIXED),
    ]
    return candidates, reviews


@pytest.mark.parametrize("fmt", FORMATS.names())
def test_export_then_import_gives_back_messages_meta_and_decisions(fmt, queue, tmp_path):
    candidates, reviews = queue
    path = tmp_path / f"out{FORMATS.get_class(fmt).suffix}"
    written = export_candidates(candidates, reviews, path, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left behind

    items = import_items(path, fmt)

    assert items == written == candidate_items(candidates, reviews)
    lamp, returns, greeting = items
    assert [c.messages for c in candidates] == [i.messages for i in items]
    assert lamp.reference == "$45" and returns.reference is None
    assert lamp.meta["candidate_id"] == 1 and lamp.meta["provenance"]["params"] == {"temperature": 0.7}
    assert returns.meta["original"] == RETURNS_ORIGINAL and "original" not in lamp.meta
    assert returns.meta["flags"] == [{"filter": "length", "reason": "short answer"}]
    assert greeting.decisions == [] and greeting.messages[1]["content"] == "Très bien 🙂"
    # each reviewer's latest decision, oldest first; bob's first "accept" was superseded
    assert lamp.decisions == [
        ImportedDecision("alice", "accept", 4, [], "", None, T0 + timedelta(minutes=2)),
        ImportedDecision("bob", "reject", 2, ["wrong_fact", "tone"], "price is $45", LAMP_FIXED,
                         T0 + timedelta(minutes=4)),
    ]
    assert returns.decisions[0].after_messages == RETURNS
    assert returns.decisions[0].created_at.tzinfo is not None


def test_every_format_has_a_suffix_and_an_unknown_one_is_refused(queue, tmp_path):
    assert {name: cls.suffix for name, cls in ((n, FORMATS.get_class(n)) for n in FORMATS.names())} == {
        "label-studio": ".json", "argilla": ".json", "jsonl": ".jsonl", "parquet": ".parquet"}
    with pytest.raises(TunewrightError, match="unknown review format 'csv'.*label-studio"):
        export_candidates(*queue, tmp_path / "x.csv", "csv")
    assert not (tmp_path / "x.csv").exists()


def test_label_studio_tasks_have_the_documented_shape(queue, tmp_path):
    path = tmp_path / "ls.json"
    export_candidates(*queue, path, "label-studio")
    tasks = json.loads(path.read_text())
    lamp, returns = tasks[0], tasks[1]
    assert lamp["id"] == 1 and lamp["data"]["question"] == "How much is the lamp?"
    assert lamp["data"]["answer"] == "It costs $40." and lamp["data"]["meta"]["queue"] == "shop"
    assert returns["data"]["question"] == "Can I return a lamp?" and returns["data"]["messages"] == RETURNS
    bob = lamp["annotations"][1]
    assert bob["completed_by"] == "bob" and bob["created_at"].startswith("2026-03-01T09:04:00")
    by_name = {r["from_name"]: r for r in bob["result"]}
    assert by_name["decision"]["value"] == {"choices": ["reject"]} and by_name["decision"]["type"] == "choices"
    assert by_name["rating"]["value"] == {"rating": 2}
    assert by_name["answer_edit"]["value"] == {"text": ["It costs $45."]}
    assert by_name["reasons"]["value"] == {"choices": ["wrong_fact", "tone"]}


def test_label_studio_config_names_every_control_the_tasks_use():
    root = ET.fromstring(label_studio_config(["wrong_fact", 'says "hi" & <bye>']))
    controls = {el.get("name"): el for el in root.iter() if el.get("name")}
    assert {"decision", "rating", "reasons", "answer_edit", "note", "answer", "dialogue"} <= set(controls)
    assert all(controls[n].get("toName") == "answer" for n in ("decision", "rating", "reasons", "answer_edit", "note"))
    assert controls["answer"].get("value") == "$answer" and controls["dialogue"].get("value") == "$messages"
    assert [c.get("value") for c in controls["decision"]] == ["accept", "reject"]
    assert [c.get("value") for c in controls["reasons"]] == ["wrong_fact", 'says "hi" & <bye>']
    assert controls["rating"].get("maxRating") == "5"
    plain = ET.fromstring(label_studio_config())
    assert "reasons" not in {el.get("name") for el in plain.iter()}


def test_argilla_records_have_the_documented_shape(queue, tmp_path):
    path = tmp_path / "argilla.json"
    export_candidates(*queue, path, "argilla")
    lamp, returns, _ = json.loads(path.read_text())
    assert lamp["fields"] == {"prompt": "How much is the lamp?", "response": "It costs $40.", "reference": "$45"}
    assert lamp["suggestions"] == [{"question_name": "rating", "value": 4, "agent": "judge"}]
    assert returns["suggestions"] == []
    assert json.loads(returns["fields"]["messages"]) == RETURNS  # multi-turn keeps the whole conversation
    bob = lamp["responses"][1]
    assert bob["user_id"] == "bob" and bob["status"] == "submitted"
    assert bob["values"]["decision"] == {"value": "reject"} and bob["values"]["rating"] == {"value": 2}
    assert bob["values"]["corrected_response"] == {"value": "It costs $45."}
    assert lamp["metadata"]["candidate_id"] == 1


def test_jsonl_is_plain_chat_rows_that_data_import_accepts(queue, tmp_path):
    candidates, _ = queue
    path = tmp_path / "rows.jsonl"
    export_candidates(candidates, [], path, "jsonl")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert set(lines[0]) == {"messages", "meta", "reference"} and set(lines[1]) == {"messages", "meta"}
    row = normalise_record(lines[1], file=path, line=2)
    assert [m.model_dump() for m in row.messages] == RETURNS and row.meta["candidate_id"] == 2


def test_parquet_stores_nested_messages_and_json_meta(queue, tmp_path):
    path = tmp_path / "rows.parquet"
    export_candidates(*queue, path, "parquet")
    table = pq.read_table(path)
    assert table.column_names == ["messages", "reference", "meta", "review"]
    assert pa.types.is_list(table.schema.field("messages").type)
    assert table.schema.field("meta").type == pa.string()
    row = table.to_pylist()[0]
    assert row["messages"] == LAMP and json.loads(row["meta"])["queue"] == "shop"
    assert [d["reviewer"] for d in json.loads(row["review"])["decisions"]] == ["alice", "bob"]
    assert table.to_pylist()[2]["review"] is None


def test_imports_a_label_studio_export_as_label_studio_writes_it(tmp_path):
    tasks = [
        {
            "id": 42, "data": {"question": "What is the warranty?", "answer": "Two years."},
            "annotations": [
                {"id": 7, "completed_by": 3, "was_cancelled": False, "ground_truth": False, "lead_time": 8.1,
                 "created_at": "2024-05-01T10:00:00.123456Z", "updated_at": "2024-05-01T10:00:09Z",
                 "task": 42, "project": 1,
                 "result": [
                     {"id": "aZ1", "from_name": "decision", "to_name": "answer", "type": "choices",
                      "origin": "manual", "value": {"choices": ["Reject"]}},
                     {"id": "aZ2", "from_name": "answer_edit", "to_name": "answer", "type": "textarea",
                      "origin": "manual", "value": {"text": ["Three years."]}},
                     {"id": "aZ3", "from_name": "sentiment", "to_name": "answer", "type": "choices",
                      "value": {"choices": ["neutral"]}},
                 ]},
                {"id": 8, "completed_by": {"id": 5, "email": "ann@example.com", "first_name": "Ann"},
                 "was_cancelled": False, "created_at": "2024-05-02T08:30:00Z",
                 "result": [{"from_name": "decision", "to_name": "answer", "type": "choices",
                             "value": {"choices": ["accept"]}},
                            {"from_name": "rating", "to_name": "answer", "type": "rating", "value": {"rating": 4}}]},
                {"id": 9, "completed_by": 6, "was_cancelled": True, "result": []},
            ],
            "predictions": [], "meta": {}, "created_at": "2024-04-30T12:00:00Z", "project": 1,
        },
        {"id": 43, "data": {"messages": LAMP, "meta": {"source": "shop"}}, "annotations": []},
    ]
    path = tmp_path / "project-1-at-2024.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")

    warranty, lamp = import_items(path, "label-studio")

    assert warranty.messages == [{"role": "user", "content": "What is the warranty?"},
                                 {"role": "assistant", "content": "Two years."}]
    first, second = warranty.decisions  # the cancelled (skipped) annotation is not a decision
    assert (first.reviewer, first.decision, first.rating) == ("ls-user-3", "reject", None)
    assert first.after_messages == [warranty.messages[0], {"role": "assistant", "content": "Three years."}]
    assert first.created_at == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert (second.reviewer, second.decision, second.rating, second.after_messages) == (
        "ann@example.com", "accept", 4, None)
    assert lamp == ImportedItem(LAMP, {"source": "shop"}, [], None)


def test_argilla_drafts_and_discarded_responses_are_not_decisions(tmp_path):
    record = {"id": "r1", "fields": {"prompt": "Q?", "response": "A."}, "responses": [
        {"user_id": "0f5c-uuid", "values": {"decision": {"value": "accept"}}, "status": "submitted",
         "updated_at": "2024-01-01T00:00:00"},
        {"user_id": "other", "values": {"decision": {"value": "reject"}}, "status": "discarded"},
        {"user_id": "third", "values": {}, "status": "draft"},
    ]}
    path = tmp_path / "records.json"
    path.write_text(json.dumps([record]))
    (item,) = import_items(path, "argilla")
    assert [(d.reviewer, d.decision) for d in item.decisions] == [("0f5c-uuid", "accept")]
    assert item.decisions[0].created_at == datetime(2024, 1, 1, tzinfo=timezone.utc)  # no zone: UTC
    assert item.meta == {} and item.messages[1] == {"role": "assistant", "content": "A."}


# --- bad input: every error names the file and the record -----------------------------------------


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def _task(**data) -> dict:
    return {"id": 5, "data": {"messages": LAMP, **data}, "annotations": []}


def _ann(*result, who="bob") -> dict:
    return {"completed_by": who, "result": list(result)}


def _choice(value) -> dict:
    return {"from_name": "decision", "to_name": "answer", "type": "choices", "value": {"choices": value}}


@pytest.mark.parametrize("content, expected", [
    ('[{"id": 1,', r"tasks\.json:1: malformed JSON"),
    ('{"tasks": []}', r"tasks\.json: expected a JSON list of tasks, got an object"),
    ("[]", r"tasks\.json: file has no items"),
    ([_task(), "oops"], r"tasks\.json: task 2: must be an object, got text"),
    ([_task(), {"id": 9}], r"tasks\.json: task 2 \(id 9\): field 'data': must be an object, got null"),
    ([{"id": 9, "data": {"text": "x"}}], r"task 1 \(id 9\): field 'data\.messages': missing"),
    ([_task(messages=[LAMP[0], {"role": "bot", "content": "x"}])],
     r"tasks\.json: task 1 \(id 5\): field 'data\.messages\[1\]\.role': unknown role 'bot'"),
    ([_task(messages=[LAMP[1], LAMP[0]])], r"task 1 \(id 5\): field 'data\.messages': the first non-system"),
    ([_task(messages="[nope")], r"field 'data\.messages': is text but not valid JSON"),
    ([_task(meta=[1])], r"field 'data\.meta': "),
    ([{**_task(), "annotations": [_ann(_choice(["maybe"]))]}],
     r"task 1 \(id 5\): field 'annotations\[0\]\.result\[0\]\.value\.choices': must be accept or reject"),
    ([{**_task(), "annotations": [_ann(_choice(["accept", "reject"]))]}], r"exactly one choice, got 2"),
    ([{**_task(), "annotations": [_ann({"from_name": "rating", "value": {"rating": 4}})]}],
     r"field 'annotations\[0\]\.result': missing; every decision needs accept or reject"),
    ([{**_task(), "annotations": [_ann(_choice(["accept"]), {"from_name": "rating", "value": {"rating": 9}})]}],
     r"field 'annotations\[0\]\.result\[1\]\.value\.rating': must be a whole number from 1 to 5"),
    ([{**_task(), "annotations": [_ann(_choice(["accept"]), who=None)]}],
     r"field 'annotations\[0\]\.completed_by': must be text, got null"),
    ([{**_task(), "annotations": [{**_ann(_choice(["accept"])), "created_at": "yesterday"}]}],
     r"field 'annotations\[0\]\.created_at': must be an ISO 8601 time"),
])
def test_bad_label_studio_input_names_file_and_task(content, expected, tmp_path):
    path = _write(tmp_path / "tasks.json", content)
    with pytest.raises(TunewrightError, match=expected) as caught:
        import_items(path, "label-studio")
    assert caught.value.file == str(path)


@pytest.mark.parametrize("record, expected", [
    ({"id": "r7", "fields": {"prompt": "Q?"}}, r"record 1 \(id r7\): field 'fields\.response': must be text"),
    ({"fields": {"messages": "{not json"}}, r"record 1: field 'fields\.messages': is text but not valid JSON"),
    ({"fields": {"prompt": "Q?", "response": "A."}, "metadata": "x"}, r"record 1: field 'metadata': "),
    ({"fields": {"prompt": "Q?", "response": "A."}, "responses": [{"user_id": "u", "values": {"decision": "ok"}}]},
     r"record 1: field 'responses\[0\]\.values\.decision': must be an object"),
    ({"fields": {"prompt": "Q?", "response": "A."},
      "responses": [{"user_id": "u", "values": {"decision": {"value": "accept"}, "rating": {"value": "5"}}}]},
     r"record 1: field 'responses\[0\]\.values\.rating\.value': must be a whole number"),
])
def test_bad_argilla_input_names_file_and_record(record, expected, tmp_path):
    path = _write(tmp_path / "records.json", [record])
    with pytest.raises(TunewrightError, match=r"records\.json: " + expected):
        import_items(path, "argilla")


def test_bad_jsonl_names_file_line_and_field(tmp_path):
    good = json.dumps({"messages": LAMP})
    cases = [
        (good + "\n" + json.dumps({"messages": [LAMP[0]]}), r"rows\.jsonl:2: field 'messages': needs at least"),
        (good + "\n\n" + json.dumps({"messages": LAMP, "answer": "x"}), r"rows\.jsonl:3: field 'answer': unexpected"),
        (json.dumps({"meta": {}}), r"rows\.jsonl:1: field 'messages': missing"),
        ("[1, 2]", r"rows\.jsonl:1: expected a JSON object per line"),
        (json.dumps({"messages": LAMP, "review": {"decisions": [{"reviewer": "a", "decision": "accept",
                                                               "rating": 0}]}}),
         r"rows\.jsonl:1: field 'review\.decisions\[0\]\.rating': must be a whole number from 1 to 5"),
        (json.dumps({"messages": LAMP, "review": {"decisions": [{"reviewer": "a", "decision": "reject",
                                                               "after_messages": [LAMP[1], LAMP[0]]}]}}),
         r"rows\.jsonl:1: field 'review\.decisions\[0\]\.after_messages': the first non-system message"),
        ("", r"rows\.jsonl: file has no items"),
    ]
    for content, expected in cases:
        path = _write(tmp_path / "rows.jsonl", content)
        with pytest.raises(TunewrightError, match=expected):
            import_items(path, "jsonl")


def test_bad_parquet_names_file_and_row(tmp_path):
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(TunewrightError, match=r"rows\.parquet: cannot read Parquet file"):
        import_items(path, "parquet")
    table = pa.Table.from_pylist([{"messages": json.dumps(LAMP), "meta": "{}"},
                                  {"messages": json.dumps(LAMP), "meta": "{broken"}])
    pq.write_table(table, path)
    with pytest.raises(TunewrightError, match=r"rows\.parquet:2: field 'meta': is text but not valid JSON"):
        import_items(path, "parquet")


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(NotFoundError, match=r"nope\.json: file not found"):
        import_items(tmp_path / "nope.json", "argilla")
    with pytest.raises(TunewrightError, match="is a folder"):
        import_items(tmp_path, "jsonl")


@pytest.mark.parametrize("fmt, keeps_whole_edit", [("jsonl", True), ("parquet", True),
                                                   ("label-studio", False), ("argilla", False)])
def test_an_edit_to_an_earlier_turn_survives_only_where_the_format_can_hold_it(fmt, keeps_whole_edit, tmp_path):
    edited = [RETURNS[0], {"role": "user", "content": "Can I return a lamp I bought?"}, *RETURNS[2:]]
    reviews = [review(1, 2, "alice", "accept", before=RETURNS, minutes=1, after=edited)]
    path = tmp_path / f"x{FORMATS.get_class(fmt).suffix}"
    export_candidates([candidate(2, RETURNS)], reviews, path, fmt)
    (item,) = import_items(path, fmt)
    # Label Studio and Argilla carry the corrected final answer only, applied to the item's messages.
    assert item.decisions[0].after_messages == (edited if keeps_whole_edit else RETURNS)


def test_an_empty_label_studio_edit_box_is_no_edit(tmp_path):
    result = [_choice(["accept"]), {"from_name": "answer_edit", "type": "textarea", "value": {"text": ["  "]}},
              {"from_name": "note", "type": "textarea", "value": {"text": "plain string, not a list"}}]
    path = _write(tmp_path / "tasks.json", [{**_task(), "annotations": [_ann(*result)]}])
    (decision,) = import_items(path, "label-studio")[0].decisions
    assert decision.after_messages is None and decision.note == "plain string, not a list"
