"""Log-in state, CSRF tokens, the log-in throttle and page rendering shared by every route.

The session cookie is signed (Starlette's SessionMiddleware) and holds only the reviewer's name,
their session epoch (see ``reviewers``), the CSRF token and a one-shot flash message; nothing secret.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

SESSION_USER = "reviewer"
SESSION_EPOCH = "epoch"
SESSION_CSRF = "csrf"
SESSION_FLASH = "flash"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


class LoginRequired(Exception):
    """Raised by ``current_reviewer``; the app turns it into a redirect to /login."""


def csrf_token(request: Request) -> str:
    token = request.session.get(SESSION_CSRF)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def start_session(request: Request, reviewer: str, epoch: int) -> None:
    # A fresh session and token at log-in, so a token planted before log-in is worthless.
    request.session.clear()
    request.session[SESSION_USER] = reviewer
    request.session[SESSION_EPOCH] = epoch
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def current_reviewer(request: Request) -> str:
    reviewer = request.session.get(SESSION_USER)
    if not reviewer:
        raise LoginRequired()
    return reviewer


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or \
        request.headers.get("content-type", "").startswith("application/json")


async def _form(request: Request) -> FormData:
    # No page uploads files: a file part is refused (400) instead of being spooled to disk, and
    # every read of the form goes through here so the first one (cached by Starlette) has this limit.
    return await request.form(max_files=0)


async def payload(request: Request) -> dict[str, Any] | FormData:
    """The POST body, JSON or form, read once here so sync routes (run in the thread pool, as the
    store's calls block) can take it as a dependency."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            raise HTTPException(400, "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "the request body must be a JSON object")
        return data
    return await _form(request)


async def check_csrf(request: Request) -> None:
    """Every POST carries the session's token: fetch calls in a header, forms in a hidden field."""
    expected = request.session.get(SESSION_CSRF)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and not request.headers.get("content-type", "").startswith("application/json"):
        sent = (await _form(request)).get(CSRF_FIELD)
    # Bytes, not str: compare_digest raises on a non-ASCII str, which a forged token may well be.
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode("utf-8", "surrogatepass"), str(expected).encode("utf-8", "surrogatepass")):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def flash(request: Request, message: str) -> None:
    request.session[SESSION_FLASH] = message


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site paths: a crafted ?next= must not send a reviewer elsewhere after log-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def render(request: Request, template: str, /, status_code: int = 200, **context: Any) -> HTMLResponse:
    templates = request.app.state.templates
    base = {
        "reviewer": request.session.get(SESSION_USER),
        "csrf": csrf_token(request),
        "flash": request.session.pop(SESSION_FLASH, None),
        "spec": request.app.state.spec,
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


class LoginThrottle:
    """Failed log-ins counted per key (the name tried, the client address) over a sliding window.

    With ``max_failures`` failures inside ``window_s`` seconds for any key of an attempt, the
    attempt is refused without checking the password, until the oldest of those failures leaves
    the window. An attempt counts as a failure from the moment it starts and is taken back only
    when it succeeds, so parallel guesses cannot all slip in before the first one fails.
    """

    def __init__(self, max_failures: int = 5, window_s: float = 15 * 60,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.max_failures, self.window_s, self.clock, self.max_keys = max_failures, window_s, clock, max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # attempts run on the event loop, but nothing here should rely on it

    def retry_after(self, keys: Iterable[str]) -> int:
        """Seconds until an attempt with these keys is allowed; 0 when it is allowed now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._live(key, now)
                if len(times) >= self.max_failures:
                    wait = max(wait, times[-self.max_failures] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def attempt(self, keys: Iterable[str]) -> float:
        """Count an attempt against every key; returns its stamp for ``succeeded``."""
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._prune(now)
            for key in keys:
                times = self._failures.setdefault(key, deque())
                times.append(now)
                while len(times) > self.max_failures:  # more than the limit changes nothing
                    times.popleft()
        return now

    def succeeded(self, stamp: float, keys: Iterable[str], *, clear: Iterable[str] = ()) -> None:
        """Take the attempt back from ``keys``; forget every failure of the keys in ``clear``.

        Only the name's failures are cleared: an address's would let someone who holds one account
        reset their address's count by logging into it between guesses at others."""
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is not None and stamp in times:
                    times.remove(stamp)
            for key in clear:
                self._failures.pop(key, None)

    def _live(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._live(key, now)
        # Still full of live keys (a flood of distinct names): drop the oldest, as a bound on memory
        # matters more than remembering every name an attacker invented.
        excess = len(self._failures) - self.max_keys // 2
        if excess > 0:
            oldest = sorted(self._failures, key=lambda k: self._failures[k][-1])[:excess]
            for key in oldest:
                del self._failures[key]
