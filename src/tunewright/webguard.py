"""Guards shared by the web apps, below every stage so that any of them may use them.

Only the standard library and ``errors``: an ASGI middleware needs nothing more, and this module
must stay importable from the lowest layers.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, MutableMapping

from .errors import TunewrightError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (scope, message) -> (content type, body) of the refusal.
Renderer = Callable[[Scope, str], "tuple[str, bytes]"]


class BodyTooLarge(TunewrightError):
    """Raised to the app from ``receive`` once a body passes the limit, so whatever was parsing it stops."""


def plain_text(scope: Scope, message: str) -> tuple[str, bytes]:
    return "text/plain; charset=utf-8", (message + "\n").encode("utf-8")


def json_error(scope: Scope, message: str) -> tuple[str, bytes]:
    return "application/json", json.dumps({"error": message}).encode("utf-8")


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, before the app parses any of them.

    A declared Content-Length over the limit is refused without calling the app at all. A body
    without one (chunked) is counted as it arrives; the read that passes the limit raises
    ``BodyTooLarge`` into the app, and whatever the app then answers (its own error page, or a 500
    from a server-error layer) is replaced by the 413, so the outcome does not depend on how the
    app handles exceptions.
    """

    def __init__(self, app: ASGIApp, limit: int, *, render: Renderer = plain_text) -> None:
        if limit < 0:
            raise TunewrightError(f"body limit {limit} must not be negative", field="limit")
        self.app, self.limit, self.render = app, limit, render

    def message(self) -> str:
        return f"request body over {self.limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            return await self._refuse(scope, send)
        seen = 0
        over = False
        started = False  # the app's own response has begun: too late to replace it
        refused = False

        async def counted() -> Message:
            nonlocal seen, over
            if over:  # an app that ignores the first refusal gets it again, never more body
                raise BodyTooLarge(self.message())
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise BodyTooLarge(self.message())
            return message

        async def guarded(message: Message) -> None:
            nonlocal started, refused
            if over and not started:
                if not refused:
                    refused = True
                    await self._refuse(scope, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        # Also when the app swallowed the error and answered nothing (or only after ``guarded``
        # already refused): the client gets exactly one 413.
        if over and not started and not refused:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        content_type, body = self.render(scope, self.message())
        # Connection: close, because the rest of the body is never read; the socket cannot be reused.
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", content_type.encode("latin-1")),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            # A malformed length is the server's to reject; here it only means "count as it comes".
            return int(text) if text.isdigit() else None
    return None
