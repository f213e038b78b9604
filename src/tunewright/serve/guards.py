"""ASGI guards around every route: the Host allowlist, the request body limit, and one generic answer
for internal errors. They wrap the app rather than sit in routes so that no route can forget them."""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid

from .protocol import ApiError

log = logging.getLogger(__name__)

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_SCHEME_PORTS = {"http": "80", "https": "443"}


def is_loopback(host: str) -> bool:
    host = host.strip().lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, str | None]:
    """``name[:port]`` as (lower-case name, port or None); IPv6 literals keep their brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value, None
        rest = value[end + 1:]
        return value[:end + 1], rest[1:] if rest.startswith(":") else None
    if value.count(":") > 1:  # an IPv6 literal written without brackets, as in serve.host
        return f"[{value}]", None
    name, _, port = value.partition(":")
    return name, port if _ else None


def default_allowed_hosts(bound_host: str, port: int) -> list[str]:
    names = list(LOOPBACK_NAMES)
    name, _ = split_host(bound_host)
    if bound_host.strip() not in WILDCARD_HOSTS and name not in names:
        names.append(name)
    return [f"{n}:{port}" for n in names]


async def send_error(send, exc: ApiError) -> None:
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HostAllowlist:
    """Refuses a request whose Host header is not one this server answers to. A web page can point
    its own domain name at 127.0.0.1 (DNS rebinding) and then call the API from the user's browser;
    the browser still sends that domain as Host, so checking Host keeps such pages out."""

    def __init__(self, app, *, allowed: list[str] | None, bound_host: str, port: int) -> None:
        self.app, self.bound_host, self.port = app, bound_host, port
        self.configured = None if allowed is None else [split_host(a) for a in allowed]

    def _allowed(self, scope) -> list[tuple[str, str | None]]:
        if self.configured is not None:
            return self.configured
        # The port the connection really arrived on: the recipe's port may have been overridden.
        server = scope.get("server")
        port = server[1] if server and server[1] is not None else self.port
        return [split_host(h) for h in default_allowed_hosts(self.bound_host, port)]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan; the server has no websocket routes
            return await self.app(scope, receive, send)
        raw = dict(scope.get("headers", [])).get(b"host")
        if raw is None:
            return await send_error(send, ApiError(400, "missing Host header"))
        sent = raw.decode("latin-1")
        name, port = split_host(sent)
        port = port or _SCHEME_PORTS.get(scope.get("scheme", "http"))
        if not any(name == allowed and (allowed_port is None or allowed_port == port)
                   for allowed, allowed_port in self._allowed(scope)):
            return await send_error(send, ApiError(
                421, f"Host '{sent[:100]}' is not one this server answers to; add it to serve.allowed_hosts",
                code="host_not_allowed"))
        await self.app(scope, receive, send)


def openai_error(scope, message: str) -> tuple[str, bytes]:
    """The body limit's 413 in the shape OpenAI clients parse (``webguard.BodyLimit`` renders it)."""
    return "application/json", json.dumps(ApiError(413, message).body()).encode()


class InternalErrors:
    """Anything that is not a user error (those have their own handlers) is answered with a generic
    message and an id to find the details in the server's log: exception text can hold paths,
    library internals or other people's data."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            error_id = "err-" + uuid.uuid4().hex
            log.error("internal error %s on %s %s", error_id, scope.get("method"), scope.get("path"), exc_info=exc)
            if started:  # too late for an error answer; the server closes the connection
                raise
            await send_error(send, internal_error(error_id))


def internal_error(error_id: str) -> ApiError:
    return ApiError(500, f"internal server error (request id {error_id}); the details are in the server's log",
                    type="server_error", headers={"x-request-id": error_id})
