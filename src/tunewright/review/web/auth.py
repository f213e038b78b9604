"""Log-in state, CSRF tokens and page rendering shared by every route.

The session cookie is signed (Starlette's SessionMiddleware) and holds only the reviewer's name,
the CSRF token and a one-shot flash message; nothing secret.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

SESSION_USER = "reviewer"
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


def start_session(request: Request, reviewer: str) -> None:
    # A fresh session and token at log-in, so a token planted before log-in is worthless.
    request.session.clear()
    request.session[SESSION_USER] = reviewer
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def current_reviewer(request: Request) -> str:
    reviewer = request.session.get(SESSION_USER)
    if not reviewer:
        raise LoginRequired()
    return reviewer


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or \
        request.headers.get("content-type", "").startswith("application/json")


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
    return await request.form()


async def check_csrf(request: Request) -> None:
    """Every POST carries the session's token: fetch calls in a header, forms in a hidden field."""
    expected = request.session.get(SESSION_CSRF)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and not request.headers.get("content-type", "").startswith("application/json"):
        sent = (await request.form()).get(CSRF_FIELD)
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
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
