"""Turn a raw record of any supported shape into the one ``ChatRow`` schema.

A shape is recognised by its key fields. Once a record carries any of a shape's required fields it
is held to that shape, so a typo such as ``ouput`` is reported as "field 'output' missing" instead
of the vaguer "no recognisable shape". Adding a shape is one ``Shape`` subclass plus ``@register_shape``.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from ..errors import TunewrightError
from ..plugins import PluginRegistry
from .media import MediaCollector
from .part_shapes import PartContext, convert_messages
from .schema import ChatRow

COMMON_OPTIONAL = ("reference", "meta")


class Where:
    """The file and line being normalised, so every error can say where to look."""

    def __init__(self, file: str | Path | None, line: int | None) -> None:
        self.file, self.line = file, line

    def error(self, message: str, field: str | None = None) -> TunewrightError:
        return TunewrightError(message, file=self.file, line=self.line, field=field)


class Shape:
    name: ClassVar[str]
    required: ClassVar[tuple[str, ...]]
    optional: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def describe(cls) -> str:
        opt = f" (optional: {', '.join(cls.optional)})" if cls.optional else ""
        return " + ".join(cls.required) + opt

    def messages(self, record: dict, where: Where) -> list[Any]:
        raise NotImplementedError


SHAPES: PluginRegistry[Shape] = PluginRegistry("row shape", group="shapes")
register_shape = SHAPES.register


@register_shape
class ChatShape(Shape):
    name = "chat"
    required = ("messages",)

    def messages(self, record: dict, where: Where) -> list[Any]:
        if "system" in record:
            raise where.error("put the system prompt in 'messages' as a message with role 'system'", "system")
        value = record["messages"]
        if isinstance(value, str):  # CSV cells carry the list as JSON text
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise where.error(f"is text but not valid JSON: {exc.msg}", "messages") from None
        if not isinstance(value, list):
            raise where.error(f"must be a list of {{role, content}} objects, got {_kind(value)}", "messages")
        for index, message in enumerate(value):
            if not isinstance(message, dict):
                raise where.error(f"must be an object with role and content, got {_kind(message)}",
                                  f"messages[{index}]")
        return value


class _SingleTurn(Shape):
    """Shapes holding one exchange: an optional system prompt, one user turn, one assistant turn."""

    user_field: ClassVar[str]
    assistant_field: ClassVar[str]

    def user_text(self, record: dict, where: Where) -> str:
        return _text(record, self.user_field, where)

    def messages(self, record: dict, where: Where) -> list[Any]:
        out = []
        system = _optional_text(record, "system", where)
        if system is not None:
            out.append({"role": "system", "content": system})
        out.append({"role": "user", "content": self.user_text(record, where)})
        out.append({"role": "assistant", "content": _text(record, self.assistant_field, where)})
        return out


@register_shape
class InstructionShape(_SingleTurn):
    name = "instruction"
    required = ("instruction", "output")
    optional = ("input", "system")
    user_field, assistant_field = "instruction", "output"

    def user_text(self, record: dict, where: Where) -> str:
        instruction = _text(record, "instruction", where)
        extra = _optional_text(record, "input", where)
        return f"{instruction}\n\n{extra}" if extra is not None else instruction


@register_shape
class PromptCompletionShape(_SingleTurn):
    name = "prompt_completion"
    required = ("prompt", "completion")
    optional = ("system",)
    user_field, assistant_field = "prompt", "completion"


def accepted_shapes() -> str:
    return "; ".join(cls.describe() for cls in SHAPES.classes())


def detect_shape(record: dict, where: Where) -> type[Shape]:
    candidates = [cls for cls in SHAPES.classes() if any(f in record for f in cls.required)]
    if len(candidates) > 1:
        # Blame the shape the row matches least: with prompt, completion and output, it is output.
        candidates.sort(key=lambda cls: -sum(f in record for f in cls.required))
        names = [next(f for f in cls.required if f in record) for cls in candidates]
        raise where.error(f"fields {', '.join(map(repr, names))} belong to different shapes; "
                          "use one shape per row", names[-1])
    if not candidates:
        found = ", ".join(sorted(map(str, record))) or "none"
        raise where.error(f"no recognisable shape (found fields: {found}); accepted: {accepted_shapes()}")
    shape = candidates[0]
    for field in shape.required:
        if field not in record:
            raise where.error(f"missing (a {shape.name} row needs {shape.describe()})"
                              + _did_you_mean(field, record, shape), field)
    return shape


def normalise_record(record: dict, *, file: str | Path | None, line: int | None,
                     media: MediaCollector | None = None) -> ChatRow:
    """Validate one raw record and return it as a ``ChatRow`` with its source recorded in ``meta``.

    Image and audio parts are checked and hashed into ``media`` (the import's collector, which the
    version is later written from); without one they are checked against the default limits only.
    """
    where = Where(file, line)
    if not isinstance(record, dict):
        raise where.error(f"expected an object, got {_kind(record)}")
    shape = detect_shape(record, where)
    messages = shape().messages(record, where)
    base = Path(file).parent if file is not None else None
    messages = convert_messages(messages, PartContext(where, base, media or MediaCollector()))
    known = set(shape.required) | set(shape.optional) | set(COMMON_OPTIONAL)
    meta = _meta(record, where)
    for key, value in record.items():
        if key not in known and value is not None:
            meta.setdefault(key, _jsonable(value))  # extra columns keep provenance such as id or split
    if "source" in meta:
        meta["user_source"] = meta.pop("source")
    meta["source"] = {"file": Path(file).name if file is not None else None, "line": line}
    data = {"messages": messages, "reference": _reference(record, where), "meta": meta}
    try:
        return ChatRow.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, where) from None


_PART_INDEX = re.compile(r"^\[(\d+)\]: ")


def validation_error(exc: ValidationError, where: Where) -> TunewrightError:
    """Map pydantic's first error to a field path such as ``messages[2].role``."""
    err = exc.errors()[0]
    field = _path(err["loc"]) or None
    message = err["msg"].removeprefix("Value error, ")
    if message.startswith("messages: "):
        field, message = "messages", message.removeprefix("messages: ")
    part = _PART_INDEX.match(message)
    if part:  # a content validator naming one of its parts (Message._canonical)
        field, message = f"{field}[{part.group(1)}]", message[part.end():]
    if err["type"] == "literal_error" and field and field.endswith(".role"):
        message = f"unknown role {err['input']!r}; use system, user or assistant"
    elif err["type"] == "missing":
        message = "missing"
    elif err["type"] == "extra_forbidden" and field and ".content[" in field:
        message = "unexpected field in a content part"
    elif err["type"] == "extra_forbidden":
        message = "unexpected field; a message has only role and content"
    elif err["type"] == "string_type":
        message = f"must be text, got {_kind(err['input'])}"
    elif err["type"] == "too_short" and field == "messages":
        message = "needs at least a user and an assistant message"
    return where.error(message, field)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and "-" in part:
            continue  # a union's tag ("part-list", "image-part", see data.parts), not a field
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _text(record: dict, field: str, where: Where) -> str:
    value = record.get(field)
    if value is None:
        raise where.error("missing", field)
    if not isinstance(value, str):
        raise where.error(f"must be text, got {_kind(value)}", field)
    if not value.strip():
        raise where.error("must not be empty", field)
    return value


def _optional_text(record: dict, field: str, where: Where) -> str | None:
    """Blank counts as absent: a CSV with a ``system`` column has an empty cell where there is none."""
    value = record.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise where.error(f"must be text, got {_kind(value)}", field)
    return value


def _reference(record: dict, where: Where) -> str | None:
    value = record.get("reference")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # {"reference": 189} plainly means the text "189"
    return _optional_text(record, "reference", where)


def _meta(record: dict, where: Where) -> dict:
    value = record.get("meta")
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise where.error(f"is text but not valid JSON: {exc.msg}", "meta") from None
    if not isinstance(value, dict):
        raise where.error(f"must be an object, got {_kind(value)}", "meta")
    return {str(k): _jsonable(v) for k, v in value.items()}


def _jsonable(value: Any) -> Any:
    """Parquet can hold dates, decimals and bytes; meta must survive a round trip through JSON."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _did_you_mean(field: str, record: dict, shape: type[Shape]) -> str:
    known = set(shape.required) | set(shape.optional) | set(COMMON_OPTIONAL)
    unknown = [str(k) for k in record if k not in known]
    close = difflib.get_close_matches(field, unknown, n=1, cutoff=0.6)
    return f"; found '{close[0]}', did you mean '{field}'?" if close else ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
