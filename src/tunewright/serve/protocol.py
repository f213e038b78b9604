"""Request bodies of the OpenAI-compatible API, and errors in OpenAI's shape.

Fields the official clients send and we do not implement (logprobs, tools, n > 1) are refused by
name rather than silently ignored, so a client never believes it got something it did not.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from ..data.schema import Message

MAX_STOPS = 4  # as OpenAI
MAX_STOP_CHARS = 256


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {...}}``, the shape OpenAI clients parse."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = Field(None, validate_default=True)
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension, for benchmarks that need fixed-length answers
    n: int = 1
    user: str | None = None
    logprobs: Any = None
    tools: Any = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("logprobs", "tools")
    @classmethod
    def _unsupported(cls, value: Any, info) -> Any:
        if value not in (None, False, []):
            raise ValueError(f"'{info.field_name}' is not supported by this server")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOPS} non-empty strings")
        # The worker matches every stop against the answer's tail after each token, holding the GIL
        # for time that grows with the square of a stop's length.
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop string is at most {MAX_STOP_CHARS} characters")
        return stops

    def token_budget(self) -> int | None:
        value = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        if value is not None and value < 1:
            field = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
            raise ApiError(400, f"{field} must be at least 1, got {value}", param=field)
        return value


class ChatRequest(_Sampling):
    # Validated as Message rows after image and audio parts are decoded (serve.media), which needs
    # the recipe's media limits; ``checked_messages`` then gives the same errors as a typed field.
    messages: list[Any] = Field(min_length=1)
    # OpenAI's spoken answers: modalities ["text", "audio"] and audio {"voice", "format"} (serve.speech).
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None


_MESSAGES = TypeAdapter(list[Message])


def checked_messages(raw: list[Any]) -> list[dict]:
    try:
        return [m.model_dump() for m in _MESSAGES.validate_python(raw)]
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", "messages", *e["loc"])} for e in exc.errors()]) from None


class CompletionRequest(_Sampling):
    prompt: str = Field(min_length=1)
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"]
    correction: str | None = Field(None, max_length=20000)
    comment: str | None = Field(None, max_length=2000)


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="name to serve it under; default: the registry name or folder name")
    adapter: str | None = Field(None, description="a registered adapter: name or name@version")
    path: str | None = Field(None, description="a folder inside the workspace's adapters/ folder")


class CombineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    adapters: list[str] = Field(min_length=1)
    weights: list[float] | None = None
    method: str = "linear"
    density: float | None = None


def validation_message(errors: list[dict]) -> tuple[str, str | None]:
    """The first pydantic error as one line plus the parameter it concerns."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = err.get("msg", "invalid request")
    if err.get("type") == "json_invalid":
        return f"request body is not valid JSON: {err.get('ctx', {}).get('error', message)}", None
    return (f"{param}: {message}" if param else message), param
