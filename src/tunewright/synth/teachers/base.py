"""What every teacher shares: the request, the completion, failures, usage accounting, the registry."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ...plugins import PluginRegistry

if TYPE_CHECKING:
    from .cache import CallCache


@dataclass(frozen=True)
class TeacherRequest:
    messages: tuple[tuple[str, str], ...] = ()  # (role, content) pairs; a tuple so requests hash and compare
    temperature: float = 0.7
    max_tokens: int = 512
    seed: int | None = None
    prompt: str | None = None  # raw text completion (no chat template), as Magpie needs; messages stay empty

    def __post_init__(self) -> None:
        if not self.messages and self.prompt is None:
            raise ValueError("a teacher request needs messages or a raw prompt")

    @classmethod
    def chat(cls, messages: list[dict[str, str]], **params: Any) -> "TeacherRequest":
        return cls(messages=tuple((m["role"], m["content"]) for m in messages), **params)

    @classmethod
    def raw(cls, prompt: str, **params: Any) -> "TeacherRequest":
        return cls(prompt=prompt, **params)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def cache_key(self, model: str) -> str:
        """Content address of a call: the same model and request always cost one call, ever."""
        payload = {"model": model, **asdict(self)}
        if self.prompt is None:
            del payload["prompt"]  # chat requests keep the keys they had before raw prompts existed
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False


class TeacherError(Exception):
    """One failed call; a round records it and goes on with the rest."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind  # timeout, connection, http, malformed, empty
        super().__init__(f"{kind}: {message}")


@dataclass
class Usage:
    """Per-round accounting; cached calls cost nothing and are counted apart."""

    calls: int = 0
    cached_calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: Completion, cost_usd: float) -> None:
        with self._lock:
            if completion.cached:
                self.cached_calls += 1
                return
            self.calls += 1
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
            self.cost_usd += cost_usd

    def count(self, *, failed: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.failed_calls += failed
            self.retries += retries

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class CachingTeacher:
    """Cache lookup and usage accounting every teacher shares; subclasses set model, cache, usage."""

    model: str
    cache: "CallCache | None"
    usage: Usage

    def _from_cache(self, request: TeacherRequest) -> Completion | None:
        hit = self.cache.get(request.cache_key(self.model)) if self.cache is not None else None
        if hit is not None:
            self.usage.add(hit, 0.0)
        return hit

    def _succeeded(self, request: TeacherRequest, completion: Completion, cost_usd: float = 0.0) -> Completion:
        # Only successes are cached: a failed call is made again next round, a good one never is.
        if self.cache is not None:
            self.cache.put(request.cache_key(self.model), completion)
        self.usage.add(completion, cost_usd)
        return completion


class Teacher(Protocol):
    name: ClassVar[str]
    Settings: ClassVar[type]  # pydantic model of the recipe's synth.teacher.settings
    model: str
    usage: Usage

    def complete(self, request: TeacherRequest) -> Completion: ...

    def complete_many(self, requests: list[TeacherRequest]) -> list[Completion | TeacherError]: ...


TEACHERS: PluginRegistry[Teacher] = PluginRegistry("teacher", recipe_field="synth.teacher.kind", group="teachers")
register_teacher = TEACHERS.register
