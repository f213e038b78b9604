"""The review web UI: server-rendered pages, a little vanilla JS, no build step and nothing fetched
from outside (review machines are often offline).

Routes for one queue live in ``queue.py``; this module wires the app, log-in and the error pages.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from ...config.synth import ReviewSpec
from ...errors import NotFoundError, TunewrightError
from ...registry import Registry
from ...webguard import BodyLimit, json_error, plain_text
from ..reviewers import log_in, session_valid
from ..store import ReviewStore
from . import corrections as correction_routes
from . import media as media_routes
from . import queue as queue_routes
from . import views
from .auth import (SESSION_EPOCH, SESSION_USER, LoginRequired, LoginThrottle, check_csrf, current_reviewer, flash,
                   payload, render, safe_next, start_session, wants_json)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "tunewright_review"
SESSION_DAYS = 14
# Every body the UI takes is a form or a JSON decision (no page uploads files); an edited item's
# turns are the largest, far under this. Checked before anything parses a body, log-in included.
MAX_BODY_BYTES = 1024 * 1024
# Same-origin everything: no inline script or style, no framing (a framed page could be
# keyboard-driven into decisions), no referrer leaking item URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def create_app(registry: Registry, review_spec: ReviewSpec, *, secret_key: str,
               queue_default: str | None = None, embedder=None, max_body_bytes: int = MAX_BODY_BYTES,
               login_throttle: LoginThrottle | None = None, align_cache: Path | None = None) -> FastAPI:
    """``embedder`` finds rows similar to a corrected one; the sentence model by default.
    ``login_throttle`` defaults to 5 failures per name or address in 15 minutes. ``align_cache``: the
    workspace's alignment cache, where the media pages read and correct aligned text."""
    if len(secret_key) < 16:
        raise TunewrightError("the review UI's session secret must have at least 16 characters")
    if max_body_bytes < 1:
        raise TunewrightError(f"max_body_bytes {max_body_bytes} must be at least 1", field="max_body_bytes")
    app = FastAPI(title="Tunewright review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry = registry
    app.state.store = ReviewStore(registry)
    app.state.spec = review_spec
    app.state.queue_default = queue_default
    app.state.embedder = embedder
    app.state.align_cache = align_cache
    app.state.login_throttle = login_throttle or LoginThrottle()
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.state.templates.env.globals.update(qpath=queue_routes.qpath, query=views.query)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            # Pages show live queue state; a back-button copy would show decisions that changed.
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.middleware("http")
    async def current_session(request: Request, call_next):
        # A signed cookie stays valid for its max age whatever happens to the account; checking it
        # against the reviewer's record on every request is what lets removal, a password change
        # or a revocation end it at once.
        name = request.session.get(SESSION_USER)
        if name and not request.url.path.startswith("/static/"):
            valid = await run_in_threadpool(session_valid, registry, name, request.session.get(SESSION_EPOCH))
            if not valid:
                # The CSRF token stays, so a POST from the dead session gets "log in first", not a
                # CSRF error that would send the reviewer reloading the page.
                request.session.pop(SESSION_USER, None)
                request.session.pop(SESSION_EPOCH, None)
                flash(request, "Your session has ended; log in again.")
        return await call_next(request)

    app.add_middleware(SessionMiddleware, secret_key=secret_key, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_DAYS * 24 * 3600, same_site="lax", https_only=False)
    # Outermost of the app's own layers, so no body is read (sessions, forms, CSRF) before its size is known.
    app.add_middleware(BodyLimit, limit=max_body_bytes, render=_body_limit_page)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _error_handlers(app)
    _auth_routes(app)
    app.include_router(queue_routes.router)
    app.include_router(correction_routes.router)
    app.include_router(media_routes.router)
    return app


def _body_limit_page(scope, message: str) -> tuple[str, bytes]:
    return json_error(scope, message) if wants_json(Request(scope)) else plain_text(scope, message)


def _error(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    titles = {400: "Cannot do that", 401: "Log-in needed", 403: "Not allowed", 404: "Not found",
              413: "Too large", 429: "Too many attempts"}
    return render(request, "error.html", status_code=status, status=status,
                  title=titles.get(status, "Something went wrong"), message=message)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.method == "GET" and not wants_json(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?{_next_query(target)}", status_code=303)
        return _error(request, 401, "log in first")

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(TunewrightError)
    async def user_error(request: Request, exc: TunewrightError) -> Response:
        return _error(request, 400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else "no such page"
        return _error(request, exc.status_code, str(message))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(request, 400, f"{where}: {first.get('msg', 'invalid request')}")


def _next_query(target: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": target})


def _auth_routes(app: FastAPI) -> None:
    @app.get("/login")
    def login_page(request: Request, next: str = "") -> Response:
        if request.session.get(SESSION_USER):
            return RedirectResponse(safe_next(next, _home(request)), status_code=303)
        return render(request, "login.html", next=safe_next(next, ""), error=None, name="")

    @app.post("/login", dependencies=[Depends(check_csrf)])
    async def login(request: Request, form=Depends(payload)) -> Response:
        name, password = str(form.get("name") or "").strip(), str(form.get("password") or "")
        target = safe_next(str(form.get("next") or ""), "")
        if name:
            throttle: LoginThrottle = app.state.login_throttle
            # Names are throttled whether or not they exist, so the throttle does not tell them apart;
            # cut short because a key is kept in memory and real names have at most 64 characters.
            keys = [f"name:{name[:256]}", f"address:{request.client.host if request.client else 'unknown'}"]
            wait = throttle.retry_after(keys)
            if wait:
                response = render(request, "login.html", status_code=429, next=target, name=name,
                                  error=f"Too many failed log-ins. Try again in {-(-wait // 60)} minute(s).")
                response.headers["Retry-After"] = str(wait)
                return response
            stamp = throttle.attempt(keys)
            # scrypt takes tens of milliseconds: keep it off the event loop.
            epoch = await run_in_threadpool(log_in, app.state.registry, name, password)
            if epoch is not None:
                throttle.succeeded(stamp, keys, clear=keys[:1])
                start_session(request, name, epoch)
                return RedirectResponse(target or _home(request), status_code=303)
        return render(request, "login.html", status_code=401, next=target, name=name,
                      error="Wrong name or password. Ask whoever runs this project to add you with "
                            "'tunewright review add-reviewer'.")

    @app.get("/logout")
    def logout_page(request: Request) -> Response:
        if not request.session.get(SESSION_USER):
            return RedirectResponse("/login", status_code=303)
        return render(request, "logout.html")

    @app.post("/logout", dependencies=[Depends(check_csrf)])
    def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/")
    def index(request: Request, me: str = Depends(current_reviewer)) -> Response:
        store: ReviewStore = app.state.store
        names = store.queues()
        default = app.state.queue_default
        if default and default not in names:
            names.insert(0, default)
        queues = [{"name": q, "progress": store.progress(q, me), "todo": len(store.todo(q, me))} for q in names]
        return render(request, "index.html", queues=queues, default=default)

    @app.get("/stats")
    def stats(request: Request, queue: str = "", me: str = Depends(current_reviewer)) -> Response:
        store: ReviewStore = app.state.store
        if queue and queue not in store.queues():
            raise NotFoundError(f"queue '{queue}' not found")
        try:
            from ..agreement import agreement_report
        except ImportError:  # the statistics module is optional to the pages
            report = None
        else:
            report = agreement_report(store.reviews(queue or None))
        progress = store.progress(queue, me) if queue else None
        return render(request, "stats.html", report=report, queue=queue, queues=store.queues(), progress=progress)


def _home(request: Request) -> str:
    default = request.app.state.queue_default
    return f"/q/{default}" if default else "/"
