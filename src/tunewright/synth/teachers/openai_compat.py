"""Any OpenAI-compatible chat (and raw completions) endpoint: vLLM, llama.cpp server, Ollama, TGI, hosted APIs.

Concurrency limit, a request-rate limit, retries with exponential backoff (honouring Retry-After,
in seconds or as an HTTP date, within [0, 60] s) on timeouts, dropped connections, 429 and 5xx, and
a content-addressed cache so a rerun costs nothing. The API key is read from the environment
variable the spec names, sent only in the Authorization header, and never appears in an error, a
log line or a repr; sending it over plain http to a host other than this machine warns
(``InsecureTeacherURLWarning``).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import math
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from typing import ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ...errors import TunewrightError
from .base import CachingTeacher, Completion, TeacherError, TeacherRequest, Usage, register_teacher
from .cache import CallCache

log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
# A provider's Retry-After is advice, not a command: a broken or hostile value must not stall a
# round for hours (or, negative or NaN, make time.sleep raise and abort it).
RETRY_AFTER_MAX_S = 60.0


class InsecureTeacherURLWarning(UserWarning):
    """The teacher's API key would cross the network unencrypted (http to a non-loopback host)."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait a Retry-After header asks for (delay-seconds or an HTTP date), clamped to
    [0, RETRY_AFTER_MAX_S]; None when the value says nothing usable, so the normal backoff applies."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # HTTP dates are GMT even when the zone is missing or "-0000"
            when = when.replace(tzinfo=timezone.utc)
        try:
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (OverflowError, OSError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone id is not part of the address
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
    return (mapped or address).is_loopback


class OpenAICompatibleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    model: str
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(30.0, ge=0)
    concurrency: int = Field(4, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    prompt_usd_per_1k_tokens: float = Field(0.0, ge=0)
    completion_usd_per_1k_tokens: float = Field(0.0, ge=0)


class _RateLimiter:
    """Spaces request starts evenly; a burst of workers cannot exceed the provider's quota."""

    def __init__(self, per_minute: float | None) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


@register_teacher
class OpenAICompatibleTeacher(CachingTeacher):
    name: ClassVar[str] = "openai-compatible"
    Settings: ClassVar[type[BaseModel]] = OpenAICompatibleSpec

    def __init__(self, spec: OpenAICompatibleSpec, cache: CallCache | None = None) -> None:
        self.spec = spec
        self.model = spec.model
        self.cache = cache
        self.usage = Usage()
        headers = {"Content-Type": "application/json"}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise TunewrightError(f"environment variable {spec.api_key_env} is not set", field="api_key_env")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=spec.base_url.rstrip("/"), headers=headers, timeout=spec.timeout_s)
        self._limiter = _RateLimiter(spec.requests_per_minute)
        base = self._client.base_url
        if "Authorization" in headers and base.scheme == "http" and not _is_loopback(base.host):
            # Only scheme, host and port: the URL itself may carry credentials.
            where = f"http://{base.host}" + (f":{base.port}" if base.port else "")
            message = (f"teacher base_url {where} is plain http to a non-loopback host: the API key from "
                       f"{spec.api_key_env} is sent unencrypted; use https")
            warnings.warn(message, InsecureTeacherURLWarning, stacklevel=2)
            log.warning(message)

    def __repr__(self) -> str:
        return f"OpenAICompatibleTeacher(base_url={self.spec.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def _cost(self, completion: Completion) -> float:
        return (completion.prompt_tokens * self.spec.prompt_usd_per_1k_tokens
                + completion.completion_tokens * self.spec.completion_usd_per_1k_tokens) / 1000

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return min(asked, self.spec.max_backoff_s)
        # The exponent is bounded so a large max_retries cannot overflow the float product.
        return min(self.spec.backoff_s * 2.0 ** min(attempt, 64), self.spec.max_backoff_s)

    def _post(self, request: TeacherRequest) -> dict:
        if request.prompt is not None:
            path, body = "/completions", {"model": self.model, "prompt": request.prompt}
        else:
            path, body = "/chat/completions", {"model": self.model, "messages": request.message_dicts()}
        body.update(temperature=request.temperature, max_tokens=request.max_tokens)
        if request.seed is not None:
            body["seed"] = request.seed
        for attempt in range(self.spec.max_retries + 1):
            self._limiter.wait()
            retry_after = None
            try:
                response = self._client.post(path, json=body)
            except httpx.TimeoutException:
                failure = TeacherError("timeout", f"no answer within {self.spec.timeout_s:g} s")
            except httpx.TransportError as exc:
                failure = TeacherError("connection", type(exc).__name__)
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise TeacherError("malformed", "response is not JSON") from None
                failure = TeacherError("http", f"status {response.status_code}")
                if response.status_code not in _RETRY_STATUS:
                    raise failure
                retry_after = response.headers.get("retry-after")
            if attempt == self.spec.max_retries:
                raise failure
            self.usage.count(retries=1)
            delay = self._backoff(attempt, retry_after)
            log.info("teacher call failed (%s); retry %d in %.1f s", failure, attempt + 1, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def complete(self, request: TeacherRequest) -> Completion:
        if (hit := self._from_cache(request)) is not None:
            return hit
        try:
            data = self._post(request)
            choice = data["choices"][0]
            text = choice["text"] if request.prompt is not None else choice["message"]["content"]
        except TeacherError:
            self.usage.count(failed=1)
            raise
        except (KeyError, IndexError, TypeError):
            self.usage.count(failed=1)
            field = "text" if request.prompt is not None else "message.content"
            raise TeacherError("malformed", f"no choices[0].{field} in the response") from None
        if not isinstance(text, str) or not text.strip():
            self.usage.count(failed=1)
            raise TeacherError("empty", "the teacher returned no text")
        usage = data.get("usage") or {}
        completion = Completion(text=text, model=self.model, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                completion_tokens=int(usage.get("completion_tokens") or 0))
        return self._succeeded(request, completion, self._cost(completion))

    def complete_many(self, requests: list[TeacherRequest]) -> list[Completion | TeacherError]:
        """All requests, at most ``concurrency`` in flight; failures come back in place, not raised."""

        def one(request: TeacherRequest) -> Completion | TeacherError:
            try:
                return self.complete(request)
            except TeacherError as failure:
                return failure

        with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            return list(pool.map(one, requests))
