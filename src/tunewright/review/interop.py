"""Review items and decisions to and from Label Studio, Argilla, chat JSONL and Parquet.

Every format writes and reads the same in-memory ``ImportedItem``, so export followed by import
gives back the same messages, meta and decisions. An item's decisions are each reviewer's latest
one: earlier changed minds are not exported, and Argilla accepts one response per user anyway.

Label Studio and Argilla carry an edit as the corrected final answer only; on import the edited
conversation is the item's messages with the last turn replaced. JSONL and Parquet keep the whole
edited conversation. Parquet stores ``messages`` as a nested list<struct<role, content>> column (what
Hugging Face datasets and ``tunewright data import`` read) and ``meta`` / ``review`` as JSON text,
because meta differs from row to row and a struct column would pad every row with every key.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Sequence
from xml.sax.saxutils import quoteattr

from pydantic import ValidationError

from ..data.normalize import Where, validation_error
from ..data.readers import read_jsonl, read_parquet
from ..data.schema import ChatRow
from ..errors import NotFoundError, TunewrightError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from ..plugins import PluginRegistry
from .agreement import latest_reviews
from .records import DECISIONS, CandidateRecord, ReviewRecord

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ImportedDecision:
    reviewer: str
    decision: str  # accept | reject
    rating: int | None = None
    reasons: list[str] = field(default_factory=list)
    note: str = ""
    after_messages: Messages | None = None  # None when the reviewer did not edit
    created_at: datetime | None = None


@dataclass(frozen=True)
class ImportedItem:
    messages: Messages
    meta: dict[str, Any] = field(default_factory=dict)
    decisions: list[ImportedDecision] = field(default_factory=list)
    reference: str | None = None


class RecordError(TunewrightError):
    """A problem in one record of a file whose line numbers do not help: ``file: task 3: field 'x': ...``."""

    def __init__(self, message: str, *, file: str | Path, record: str, field: str | None = None) -> None:
        self.record = record
        super().__init__(message, file=file, field=field)

    def format(self) -> str:
        parts = [self.file, self.record, f"field '{self.field}'" if self.field else None]
        return ": ".join(p for p in parts if p) + f": {self.message}"


@dataclass(frozen=True)
class _At:
    """Where a value came from: file, then a record label or a line, then the path to the object."""

    file: Path
    record: str | None = None
    line: int | None = None
    prefix: str = ""

    def error(self, message: str, field: str | None = None) -> TunewrightError:
        path = ".".join(p for p in (self.prefix, field) if p) or None
        if self.record is not None:
            return RecordError(message, file=self.file, record=self.record, field=path)
        return TunewrightError(message, file=self.file, line=self.line, field=path)

    def enter(self, field: str) -> "_At":
        return _At(self.file, self.record, self.line, ".".join(p for p in (self.prefix, field) if p))


# --- from the review store ------------------------------------------------------------------------


def candidate_items(candidates: Iterable[CandidateRecord], reviews: Iterable[ReviewRecord]) -> list[ImportedItem]:
    """What an export writes: one item per candidate with each reviewer's latest decision."""
    by_candidate: dict[int, list[ReviewRecord]] = defaultdict(list)
    for r in latest_reviews(reviews):
        by_candidate[r.candidate_id].append(r)
    return [ImportedItem(_plain(c.messages), candidate_meta(c), [
        ImportedDecision(r.reviewer, r.decision, r.rating, list(r.reasons), r.note,
                         _plain(r.after) if r.after is not None else None, r.created_at)
        for r in by_candidate[c.id]], c.reference) for c in candidates]


def candidate_meta(c: CandidateRecord) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "candidate_id": c.id, "queue": c.queue, "round": c.round, "status": c.status,
        "generator": c.generator, "topic": c.topic, "judge_score": c.judge_score, "flags": c.flags,
        "provenance": c.provenance, "created_at": c.created_at.isoformat(),
    }
    if c.original != c.messages:
        meta["original"] = _plain(c.original)
    # Pass through JSON once so what we hold equals what any format reads back.
    return json.loads(json.dumps(meta, default=str))


def _plain(messages: Sequence[dict[str, str]]) -> Messages:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# --- the format registry --------------------------------------------------------------------------

Entry = tuple[_At, Any, dict[str, Any], dict[str, str]]  # where, reviewer, values, where each value sits


class Format:
    """One file format. Readers split a record into its conversation and its decision entries and
    leave validation to ``_item``, so every format reports errors the same way."""

    name: ClassVar[str]
    suffix: ClassVar[str]  # what a file in this format is usually called: out.json, out.parquet
    edits_answer_only: ClassVar[bool] = False  # an edit arrives as the corrected final answer

    def write(self, items: list[ImportedItem], path: Path) -> None: ...
    def records(self, path: Path) -> Iterator[tuple[_At, Any]]: ...
    # (messages, reference, meta, where ChatRow's fields sit in this format)
    def content(self, at: _At, record: dict) -> tuple[Any, Any, Any, dict[str, str]]: ...
    def entries(self, at: _At, record: dict) -> Iterator[Entry]: ...

    def read(self, path: Path) -> list[ImportedItem]:
        return [self._item(at, record) for at, record in self.records(path)]

    def _item(self, at: _At, record: Any) -> ImportedItem:
        record = _obj(at, record, None)
        messages, reference, meta, names = self.content(at, record)
        row = _chat(at, messages, reference, {} if meta in (None, "") else meta, names)
        messages = _messages(row)
        base = messages if self.edits_answer_only else None
        decisions = [_decision(sub, who, values, where, base) for sub, who, values, where in self.entries(at, record)]
        return ImportedItem(messages, dict(row.meta), decisions, row.reference)


FORMATS: PluginRegistry[Format] = PluginRegistry("review format", recipe_field="format", group="review_formats")
_register = FORMATS.register


def _format(fmt: str) -> Format:
    return FORMATS.get(fmt)


def export_candidates(candidates: Iterable[CandidateRecord], reviews: Iterable[ReviewRecord], path: str | Path,
                      fmt: str) -> list[ImportedItem]:
    """Write candidates and their decisions to ``path`` in format ``fmt``; returns what was written."""
    writer, items = _format(fmt), candidate_items(candidates, reviews)
    writer.write(items, Path(path))
    return items


def import_items(path: str | Path, fmt: str) -> list[ImportedItem]:
    """Read and validate every item of ``path``; nothing is returned unless the whole file is valid."""
    reader, path = _format(fmt), Path(path)
    if not path.exists():
        raise NotFoundError("file not found", file=path)
    if path.is_dir():
        raise TunewrightError("is a folder, expected a data file", file=path)
    items = reader.read(path)
    if not items:
        raise TunewrightError("file has no items", file=path)
    return items


# --- validation shared by every format ------------------------------------------------------------


def _chat(at: _At, messages: Any, reference: Any, meta: Any, names: dict[str, str]) -> ChatRow:
    """Validate with the one chat schema; ``names`` maps ChatRow's fields to this format's fields."""
    try:
        return ChatRow.model_validate({"messages": messages, "reference": reference, "meta": meta})
    except ValidationError as exc:
        err = validation_error(exc, Where(None, None))
    found = err.field or ""
    for ours, theirs in names.items():
        if found == ours or found.startswith((ours + "[", ours + ".")):
            found = theirs + found[len(ours):]
    raise at.error(err.message, found or None)


def _decision(at: _At, reviewer: Any, values: dict[str, Any], names: dict[str, str],
              base: Messages | None) -> ImportedDecision:
    """One decision. With ``base``, ``answer_edit`` replaces base's last turn; else ``after_messages`` is the edit."""
    where = lambda key: names.get(key, key)  # noqa: E731
    if isinstance(reviewer, int) and not isinstance(reviewer, bool):
        reviewer = str(reviewer)
    reviewer = _text(at, reviewer, where("reviewer"))
    if values.get("decision") is None:
        raise at.error("missing; every decision needs accept or reject", where("decision"))
    decision = _text(at, values["decision"], where("decision")).strip().lower()
    if decision not in DECISIONS:
        raise at.error(f"must be accept or reject, got {values['decision']!r}", where("decision"))
    rating = values.get("rating")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5):
        raise at.error(f"must be a whole number from 1 to 5, got {rating!r}", where("rating"))
    reasons = _list(at, values.get("reasons") or [], where("reasons"))
    for i, reason in enumerate(reasons):
        _text(at, reason, f"{where('reasons')}[{i}]")
    note = _text(at, values.get("note") or "", where("note"), blank=True)
    after, edit = values.get("after_messages"), values.get("answer_edit")
    # An empty edit box means the answer stood as it was.
    if base is not None and edit is not None and _text(at, edit, where("answer_edit"), blank=True).strip():
        after = [*base[:-1], {"role": "assistant", "content": edit}]
    if after is not None:
        field = where("after_messages")
        after = _messages(_chat(at, _json_text(at, after, field), None, {}, {"messages": field}))
    return ImportedDecision(reviewer, decision, rating, list(reasons), note, after,
                            _when(at, values.get("created_at"), where("created_at")))


def _json_text(at: _At, value: Any, field: str | None) -> Any:
    if isinstance(value, str):  # Argilla fields and Parquet cells carry structure as JSON text
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise at.error(f"is text but not valid JSON: {exc.msg}", field) from None
    return value


def _obj(at: _At, value: Any, field: str | None, kind: type = dict) -> Any:
    if not isinstance(value, kind):
        raise at.error(f"must be {_kind(kind())}, got {_kind(value)}", field)
    return value


def _list(at: _At, value: Any, field: str) -> list:
    return _obj(at, value, field, list)


def _text(at: _At, value: Any, field: str, *, blank: bool = False) -> str:
    if not isinstance(value, str):
        raise at.error(f"must be text, got {_kind(value)}", field)
    if not blank and not value.strip():
        raise at.error("must not be empty", field)
    return value


def _when(at: _At, value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(_text(at, value, field))
    except ValueError:
        raise at.error(f"must be an ISO 8601 time, got {value!r}", field) from None
    # Label Studio writes UTC with a Z; a time without a zone is taken as UTC too.
    return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _pair(at: _At, obj: dict, user: str, assistant: str, prefix: str) -> Messages:
    """A conversation given as two text fields, as in tasks and datasets set up by hand."""
    return [{"role": "user", "content": _text(at, obj.get(user), f"{prefix}.{user}")},
            {"role": "assistant", "content": _text(at, obj.get(assistant), f"{prefix}.{assistant}")}]


def _messages(row: ChatRow) -> Messages:
    return [m.model_dump() for m in row.messages]


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _edit(d: ImportedDecision) -> str | None:
    return d.after_messages[-1]["content"] if d.after_messages is not None else None


def _kind(value: Any) -> str:
    return "null" if value is None else {str: "text", bool: "a boolean", int: "a number", float: "a number",
                                         list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


class _JsonList(Format):
    """A file holding one JSON list of records, as Label Studio and Argilla export them."""

    noun: ClassVar[str]
    edits_answer_only = True

    def write(self, items: list[ImportedItem], path: Path) -> None:
        atomic_write_json(path, [self.record(item, i) for i, item in enumerate(items)])

    def record(self, item: ImportedItem, index: int) -> dict: ...

    def records(self, path: Path) -> Iterator[tuple[_At, Any]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise TunewrightError(f"not valid UTF-8 (byte offset {exc.start}); re-save the file as UTF-8",
                                  file=path) from None
        except json.JSONDecodeError as exc:
            raise TunewrightError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path,
                                  line=exc.lineno) from None
        if not isinstance(data, list):
            raise TunewrightError(f"expected a JSON list of {self.noun}s, got {_kind(data)}", file=path)
        for index, record in enumerate(data):
            ident = record.get("id") if isinstance(record, dict) else None
            shown = f" (id {ident})" if isinstance(ident, (int, str)) else ""
            yield _At(path, record=f"{self.noun} {index + 1}{shown}"), record

    @staticmethod
    def ident(item: ImportedItem, index: int) -> int:
        ident = item.meta.get("candidate_id")
        return ident if isinstance(ident, int) else index + 1


# --- Label Studio ---------------------------------------------------------------------------------


def label_studio_config(reasons: Sequence[str] = ()) -> str:
    """The labeling config matching the exported tasks; pass the recipe's reject reasons.

    The rating scale is fixed at 1-5, the scale of ``ReviewRecord.rating`` that import checks against.
    """
    reason_block = ""
    if reasons:
        options = "".join(f"\n    <Choice value={quoteattr(r)}/>" for r in reasons)
        reason_block = ('\n  <Choices name="reasons" toName="answer" choice="multiple" showInline="true"'
                        ' visibleWhen="choice-selected" whenTagName="decision" whenChoiceValue="reject">'
                        f"{options}\n  </Choices>")
    # No pre-filled edit box: a filled one would record an "edit" on every annotation.
    return f"""<View>
  <Header value="Conversation"/>
  <Paragraphs name="dialogue" value="$messages" layout="dialogue" nameKey="role" textKey="content"/>
  <Header value="Answer under review"/>
  <Text name="answer" value="$answer"/>
  <Choices name="decision" toName="answer" choice="single-radio" required="true" showInline="true">
    <Choice value="accept"/>
    <Choice value="reject"/>
  </Choices>
  <Rating name="rating" toName="answer" maxRating="5"/>{reason_block}
  <TextArea name="answer_edit" toName="answer" rows="6" maxSubmissions="1"
            placeholder="Corrected answer (leave empty if the answer is fine)"/>
  <TextArea name="note" toName="answer" rows="2" maxSubmissions="1" placeholder="Note (optional)"/>
</View>
"""


# control name -> (result type, key inside "value")
_LS_CONTROLS = {"decision": ("choices", "choices"), "rating": ("rating", "rating"), "reasons": ("choices", "choices"),
                "answer_edit": ("textarea", "text"), "note": ("textarea", "text")}


@_register
class LabelStudioFormat(_JsonList):
    name, suffix, noun = "label-studio", ".json", "task"

    def record(self, item: ImportedItem, index: int) -> dict:
        m = item.messages
        data = {"messages": m, "question": next(x["content"] for x in m if x["role"] == "user"),
                "answer": m[-1]["content"], "meta": item.meta}
        if item.reference is not None:
            data["reference"] = item.reference
        annotations = [self._annotation(d) for d in item.decisions]
        return {"id": self.ident(item, index), "data": data, "annotations": annotations}

    def _annotation(self, d: ImportedDecision) -> dict:
        edit = _edit(d)
        values = {"decision": [d.decision], "rating": d.rating, "reasons": d.reasons or None,
                  "answer_edit": [edit] if edit is not None else None, "note": [d.note] if d.note else None}
        result = [{"from_name": name, "to_name": "answer", "type": _LS_CONTROLS[name][0],
                   "value": {_LS_CONTROLS[name][1]: value}} for name, value in values.items() if value is not None]
        out: dict[str, Any] = {"completed_by": d.reviewer, "result": result, "was_cancelled": False}
        if d.created_at is not None:
            out["created_at"] = _iso(d.created_at)
        return out

    def content(self, at: _At, task: dict) -> tuple[Any, Any, Any, dict[str, str]]:
        data = _obj(at, task.get("data"), "data")
        if "messages" in data:
            messages = _json_text(at, data["messages"], "data.messages")
        elif "question" in data or "answer" in data:
            messages = _pair(at, data, "question", "answer", "data")
        else:
            raise at.error("missing (or give data.question and data.answer)", "data.messages")
        names = {"messages": "data.messages", "reference": "data.reference", "meta": "data.meta"}
        return messages, data.get("reference"), data.get("meta"), names

    def entries(self, at: _At, task: dict) -> Iterator[Entry]:
        for j, annotation in enumerate(_list(at, task.get("annotations") or [], "annotations")):
            sub = at.enter(f"annotations[{j}]")
            annotation = _obj(sub, annotation, None)
            if annotation.get("was_cancelled"):  # a skipped task, not a decision
                continue
            values: dict[str, Any] = {"created_at": annotation.get("created_at")}
            names = {"reviewer": "completed_by", "decision": "result", "created_at": "created_at"}
            for k, region in enumerate(_list(sub, annotation.get("result"), "result")):
                name = _obj(sub, region, f"result[{k}]").get("from_name")
                if name not in _LS_CONTROLS:  # other controls in the user's own config
                    continue
                key = _LS_CONTROLS[name][1]
                names[name] = where = f"result[{k}].value.{key}"
                value = _obj(sub, region.get("value"), f"result[{k}].value").get(key)
                values[name] = _ls_value(sub, name, value, where)
            names["after_messages"] = names.get("answer_edit", "result")
            yield sub, _ls_user(annotation.get("completed_by")), values, names


def _ls_value(at: _At, name: str, value: Any, where: str) -> Any:
    if name == "decision":
        choices = _list(at, value, where)
        if len(choices) != 1:
            raise at.error(f"must hold exactly one choice, got {len(choices)}", where)
        return choices[0]
    if _LS_CONTROLS[name][1] == "text":  # a textarea holds a list of submissions; the last one counts
        texts = [value] if isinstance(value, str) else _list(at, value, where)
        return texts[-1] if texts else None
    return value


def _ls_user(value: Any) -> Any:
    """Label Studio writes the annotator as a user id, or as a user object when asked for details."""
    if isinstance(value, dict):
        named = value.get("email") or value.get("username")
        return named if named else (f"ls-user-{value['id']}" if "id" in value else None)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"ls-user-{value}"
    return value


# --- Argilla --------------------------------------------------------------------------------------


@_register
class ArgillaFormat(_JsonList):
    name, suffix, noun = "argilla", ".json", "record"

    def record(self, item: ImportedItem, index: int) -> dict:
        m = item.messages
        fields = {"prompt": next(x["content"] for x in m if x["role"] == "user"), "response": m[-1]["content"]}
        if [x["role"] for x in m] != ["user", "assistant"]:  # prompt/response alone would lose turns
            fields["messages"] = json.dumps(m, ensure_ascii=False)
        if item.reference is not None:
            fields["reference"] = item.reference
        judge = item.meta.get("judge_score")
        return {"id": self.ident(item, index), "fields": fields, "metadata": item.meta,
                "responses": [self._response(d) for d in item.decisions],
                "suggestions": [] if judge is None else [{"question_name": "rating", "value": judge, "agent": "judge"}]}

    def _response(self, d: ImportedDecision) -> dict:
        found = {"decision": d.decision, "rating": d.rating, "reasons": d.reasons or None, "note": d.note or None,
                 "corrected_response": _edit(d)}
        out = {"user_id": d.reviewer, "values": {k: {"value": v} for k, v in found.items() if v is not None},
               "status": "submitted"}
        if d.created_at is not None:
            out["inserted_at"] = _iso(d.created_at)
        return out

    def content(self, at: _At, record: dict) -> tuple[Any, Any, Any, dict[str, str]]:
        fields = _obj(at, record.get("fields"), "fields")
        if "messages" in fields:
            messages = _json_text(at, fields["messages"], "fields.messages")
        else:
            messages = _pair(at, fields, "prompt", "response", "fields")
        names = {"messages": "fields.messages", "reference": "fields.reference", "meta": "metadata"}
        return messages, fields.get("reference"), record.get("metadata"), names

    def entries(self, at: _At, record: dict) -> Iterator[Entry]:
        for j, response in enumerate(_list(at, record.get("responses") or [], "responses")):
            sub = at.enter(f"responses[{j}]")
            response = _obj(sub, response, None)
            if response.get("status", "submitted") != "submitted":  # drafts and discarded ones decide nothing
                continue
            values = {k: _obj(sub, v, f"values.{k}").get("value")
                      for k, v in _obj(sub, response.get("values"), "values").items()}
            values["answer_edit"] = values.pop("corrected_response", None)
            values["created_at"] = response.get("inserted_at") or response.get("updated_at")
            yield sub, response.get("user_id"), values, _ARGILLA_NAMES


_ARGILLA_NAMES = {"reviewer": "user_id", "created_at": "inserted_at",
                  **{k: f"values.{k}.value" for k in ("decision", "rating", "reasons", "note")},
                  "answer_edit": "values.corrected_response.value", "after_messages": "values.corrected_response.value"}


# --- chat JSONL and Parquet -----------------------------------------------------------------------


class _Rows(Format):
    """One chat row per line or table row: messages, reference, meta and an optional review."""

    keys = ("messages", "reference", "meta", "review")

    @staticmethod
    def row(item: ImportedItem, dump: Any = lambda v: v) -> dict[str, Any]:
        decisions = [{"reviewer": d.reviewer, "decision": d.decision, "rating": d.rating, "reasons": d.reasons,
                      "note": d.note, "after_messages": d.after_messages, "created_at": _iso(d.created_at)}
                     for d in item.decisions]
        return {"messages": item.messages, "reference": item.reference, "meta": dump(item.meta),
                "review": dump({"decisions": decisions}) if decisions else None}

    def content(self, at: _At, row: dict) -> tuple[Any, Any, Any, dict[str, str]]:
        unknown = [k for k in row if k not in self.keys]
        if unknown:
            raise at.error(f"unexpected field; a row has {', '.join(self.keys)}", str(unknown[0]))
        if "messages" not in row:
            raise at.error("missing", "messages")
        meta = _json_text(at, row.get("meta"), "meta")
        return _json_text(at, row["messages"], "messages"), row.get("reference"), meta, {}

    def entries(self, at: _At, row: dict) -> Iterator[Entry]:
        review = _json_text(at, row.get("review"), "review")
        review = {} if review in (None, "") else _obj(at, review, "review")
        for j, d in enumerate(_list(at, review.get("decisions") or [], "review.decisions")):
            sub = at.enter(f"review.decisions[{j}]")
            d = _obj(sub, d, None)
            yield sub, d.get("reviewer"), d, {}


@_register
class JsonlFormat(_Rows):
    name, suffix = "jsonl", ".jsonl"

    def write(self, items: list[ImportedItem], path: Path) -> None:
        # Leave out empty reference and review so an unreviewed export is a plain training file.
        atomic_write_jsonl(path, ({k: v for k, v in self.row(item).items() if k == "meta" or v is not None}
                                  for item in items))

    def records(self, path: Path) -> Iterator[tuple[_At, Any]]:
        return ((_At(path, line=number), row) for number, row in read_jsonl(path))


@_register
class ParquetFormat(_Rows):
    name, suffix = "parquet", ".parquet"

    def write(self, items: list[ImportedItem], path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        schema = pa.schema([("messages", pa.list_(message)), ("reference", pa.string()),
                            ("meta", pa.string()), ("review", pa.string())])
        dump = lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)  # noqa: E731
        table = pa.Table.from_pylist([self.row(item, dump) for item in items], schema=schema)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def records(self, path: Path) -> Iterator[tuple[_At, Any]]:
        return ((_At(path, line=number), row) for number, row in read_parquet(path))
