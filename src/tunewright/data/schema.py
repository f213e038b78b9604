"""The one chat schema every imported or generated row is normalised to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..errors import TunewrightError
from .parts import PART_TEXT_SEPARATOR, Content, MediaPart, TextPart, media_parts, text_parts

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """``content`` is text, or (user and system turns) a list of text, image and audio parts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: Content

    @field_validator("content")
    @classmethod
    def _canonical(cls, value: str | list, info: ValidationInfo) -> str | list:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            return value
        if not value:
            raise ValueError("must hold at least one part (or be text)")
        if info.data.get("role") == "assistant":
            for index, part in enumerate(value):
                if not isinstance(part, TextPart):
                    # "[i]: " is read by normalize.validation_error as the part's index in the field path.
                    raise ValueError(f"[{index}]: {part.type} part in an assistant message; what the "
                                     "assistant says is text only (images and audio go in user turns)")
        if all(isinstance(part, TextPart) for part in value):
            # One form per meaning: parts that are all text are the text, so their dedup key and
            # every text stage see a string.
            return PART_TEXT_SEPARATOR.join(part.text for part in value)
        return value

    @property
    def has_media(self) -> bool:
        return not isinstance(self.content, str)

    def media_parts(self) -> list[MediaPart]:
        return media_parts(self.content)

    def text_parts(self) -> list[str]:
        """The message's text parts (all of it for a text message); media left out, for scans only."""
        return text_parts(self.content)


class ChatRow(BaseModel):
    """One training or evaluation example.

    ``reference`` is the short fact an answer must contain to count as right (for example "$189");
    when absent, metrics compare against the last assistant message. ``meta`` carries provenance
    (source file and line, generator, phrasing id) and never reaches the model.
    """

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=2)
    reference: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> "ChatRow":
        roles = [m.role for m in self.messages]
        body = roles[1:] if roles[0] == "system" else roles
        if "system" in body:
            raise ValueError("messages: a system message may only come first")
        if not body or body[0] != "user":
            raise ValueError("messages: the first non-system message must be from the user")
        if body[-1] != "assistant":
            raise ValueError("messages: the last message must be from the assistant")
        for prev, cur in zip(body, body[1:]):
            if prev == cur:
                raise ValueError("messages: user and assistant turns must alternate")
        return self

    @property
    def prompt_messages(self) -> list[dict[str, Any]]:
        """Everything before the final assistant turn: what a model is asked."""
        return [m.model_dump() for m in self.messages[:-1]]

    @property
    def answer(self) -> str:
        content = self.messages[-1].content
        assert isinstance(content, str)  # the validator keeps assistant turns text
        return content

    @property
    def expected(self) -> str:
        return self.reference if self.reference is not None else self.answer

    def content_key(self) -> str:
        """Hash of what the model sees; equal keys are exact duplicates."""
        payload = json.dumps([m.model_dump() for m in self.messages], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @property
    def has_media(self) -> bool:
        return any(m.has_media for m in self.messages)

    def media_parts(self) -> list[MediaPart]:
        return [part for m in self.messages for part in m.media_parts()]

    def media(self) -> list[str]:
        """The stored media this row refers to (``media/<sha256>.<ext>``, relative to its dataset
        version folder), each once, in order of first use."""
        return list(dict.fromkeys(part.ref for part in self.media_parts()))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": [m.model_dump() for m in self.messages]}
        if self.reference is not None:
            out["reference"] = self.reference
        if self.meta:
            out["meta"] = self.meta
        return out


def require_text(row: ChatRow | Sequence[Message | Mapping[str, Any]], *, file: str | Path | None = None,
                 line: int | None = None) -> None:
    """Refuse a row (or its messages as dicts) holding image or audio parts, at a stage that reads text only.

    Called where rows enter text stages (``data.api.load_split``, tokenisation, token stats), so a
    part row stops with one line naming it instead of reaching a chat template as a list.
    """
    messages = row.messages if isinstance(row, ChatRow) else row
    for m_index, message in enumerate(messages):
        content = message.content if isinstance(message, Message) else message.get("content")
        if isinstance(content, str):
            continue
        kinds = [_part_type(part) for part in content or []]
        media = [(index, kind) for index, kind in enumerate(kinds) if kind != "text"]
        if not media:
            continue
        found = "/".join(dict.fromkeys(str(kind) for _, kind in media))
        source = row.meta.get("source") if isinstance(row, ChatRow) else None
        origin = ""
        if isinstance(source, dict) and source.get("file"):
            origin = f" (imported from {source['file']}" + (f":{source['line']}" if source.get("line") else "") + ")"
        raise TunewrightError(
            f"row has {found} parts{origin}: align it first (turn its images and audio into text) so this "
            "text-only stage can read it", file=file, line=line, field=f"messages[{m_index}].content[{media[0][0]}]")


def _part_type(part: Any) -> Any:
    return part.get("type") if isinstance(part, Mapping) else getattr(part, "type", None)


def require_text_rows(rows: Sequence[ChatRow], file: str | Path | None) -> None:
    """``require_text`` over a split as stored: row ``n`` is line ``n`` of ``file``."""
    for number, row in enumerate(rows, start=1):
        if row.has_media:
            require_text(row, file=file, line=number)
