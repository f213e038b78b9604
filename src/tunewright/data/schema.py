"""The one chat schema every imported or generated row is normalised to."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


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
    def prompt_messages(self) -> list[dict[str, str]]:
        """Everything before the final assistant turn: what a model is asked."""
        return [m.model_dump() for m in self.messages[:-1]]

    @property
    def answer(self) -> str:
        return self.messages[-1].content

    @property
    def expected(self) -> str:
        return self.reference if self.reference is not None else self.answer

    def content_key(self) -> str:
        """Hash of what the model sees; equal keys are exact duplicates."""
        payload = json.dumps([m.model_dump() for m in self.messages], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": [m.model_dump() for m in self.messages]}
        if self.reference is not None:
            out["reference"] = self.reference
        if self.meta:
            out["meta"] = self.meta
        return out
