"""The review UI's defences: body limit before parsing, log-in throttle, one scrypt per attempt
whether or not the name exists, sessions checked against the reviewer on every request, and
removing a reviewer from the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from review_helpers import running_app
from test_review_web import PASSWORD, SECRET, client_for, csrf_of, decide, ids, login, registry, store  # noqa: F401
from tunewright.config.synth import ReviewSpec
from tunewright.errors import TunewrightError
from tunewright.registry import tables as t
from tunewright.review import add_reviewer, authenticate
from tunewright.review.web import create_app
from tunewright.webguard import BodyLimit


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def scrypt_calls(monkeypatch):
    calls = []
    real = hashlib.scrypt

    def counting(password, *, salt, n, r, p, dklen=64, **kw):
        calls.append({"n": n, "r": r, "p": p, "dklen": dklen})
        return real(password, salt=salt, n=n, r=r, p=p, dklen=dklen, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return calls


def throttled_app(registry, clock):
    from tunewright.review.web.auth import LoginThrottle

    return create_app(registry, ReviewSpec(), secret_key=SECRET, queue_default="faq",
                      login_throttle=LoginThrottle(clock=clock))


def attempt(app, name, password, address="10.0.0.1"):
    client = TestClient(app, client=(address, 50000))
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"name": name, "password": password, "csrf": token}, follow_redirects=False)


# -- 1. body limit -------------------------------------------------------------------------------


def test_a_huge_login_post_is_413_and_no_password_is_checked(registry, scrypt_calls):
    client = client_for(registry)
    token = csrf_of(client.get("/login").text)
    padding = "x" * (2 * 1024 * 1024)
    response = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token, "pad": padding},
                           follow_redirects=False)
    assert response.status_code == 413
    assert response.text.strip() == "request body over 1048576 bytes"
    assert response.headers["connection"] == "close"
    assert scrypt_calls == []
    assert client.get("/", follow_redirects=False).status_code == 303  # not logged in


def test_a_chunked_body_without_length_is_counted_and_refused(registry, ids):
    client = client_for(registry)
    token = login(client, "ann")

    def chunks():
        for _ in range(40):
            yield b'{"decision": "accept", "note": "' + b"y" * 64 * 1024

    response = client.post(f"/q/faq/items/{ids['tent-price']}/decision", content=chunks(),
                           headers={"X-CSRF-Token": token, "Content-Type": "application/json",
                                    "Accept": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": "request body over 1048576 bytes"}


def test_a_declared_length_over_the_limit_is_refused_by_the_real_server_before_the_body(registry):
    # Only the headers are sent: the 413 must come without the server waiting for 10 GiB.
    with running_app(client_for(registry).app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 10737418240\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply:
                part = sock.recv(4096)
                assert part, reply
                reply += part
    assert reply.startswith(b"HTTP/1.1 413 ")


def test_file_parts_are_refused_before_the_csrf_check_or_the_password(registry, scrypt_calls):
    client = client_for(registry)
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token},
                           files={"upload": ("big.bin", b"z" * 1000, "application/octet-stream")},
                           follow_redirects=False)
    assert response.status_code == 400
    assert scrypt_calls == []


def _asgi(app, headers, chunks):
    """Drive ``app`` with one request whose body arrives in ``chunks``; what it sent, what it read."""
    sent, read = [], []
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        message = queue.pop(0) if queue else {"type": "http.disconnect"}
        read.append(message)
        return message

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent, read


def _echo_app(swallow: bool):
    """Reads the whole body, then answers 200; with ``swallow``, catches any error and answers 500."""
    async def app(scope, receive, send):
        try:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            status, payload = 200, body
        except Exception:
            if not swallow:
                raise
            status, payload = 500, b"oops"
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": payload})
    return app


@pytest.mark.parametrize("swallow", [False, True])
def test_body_limit_counts_chunks_and_stops_reading_at_the_limit(swallow):
    guard = BodyLimit(_echo_app(swallow), 100)
    sent, read = _asgi(guard, [], [b"a" * 60, b"b" * 60, b"c" * 60, b"d" * 60])
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]
    assert len(read) == 2  # the chunk that passed the limit was the last one read
    assert sent[-1]["body"] == b"request body over 100 bytes\n"


def test_body_limit_refuses_a_declared_length_without_calling_the_app():
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    sent, read = _asgi(BodyLimit(app, 100), [(b"content-length", b"101")], [b"x" * 101])
    assert called == [] and read == []
    assert sent[0]["status"] == 413


def test_body_limit_lets_bodies_at_the_limit_through():
    sent, _ = _asgi(BodyLimit(_echo_app(False), 100), [(b"content-length", b"100")], [b"a" * 50, b"b" * 50])
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"a" * 50 + b"b" * 50


# -- 2. log-in throttle --------------------------------------------------------------------------


def test_after_five_failures_the_name_is_locked_even_with_the_right_password(registry):
    client = client_for(registry)  # the app's own default throttle
    token = csrf_of(client.get("/login").text)
    for _ in range(5):
        response = client.post("/login", data={"name": "ann", "password": "wrong password", "csrf": token})
        assert response.status_code == 401
    response = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token},
                           follow_redirects=False)
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed log-ins" in response.text


def test_a_name_is_locked_across_addresses_until_the_window_passes(registry, scrypt_calls):
    clock = Clock()
    app = throttled_app(registry, clock)
    for i in range(5):  # each from its own address, so only the name's count can lock
        assert attempt(app, "ann", "wrong password", f"10.0.1.{i}").status_code == 401
        clock.now += 10
    scrypt_calls.clear()
    refused = attempt(app, "ann", PASSWORD, "10.0.2.1")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == str(15 * 60 - 50)
    assert scrypt_calls == []  # refused without checking the password
    assert attempt(app, "bob", PASSWORD, "10.0.2.1").status_code == 303  # other names are not locked
    clock.now = 1000.0 + 15 * 60 - 1
    assert attempt(app, "ann", PASSWORD, "10.0.2.2").headers["Retry-After"] == "1"
    clock.now = 1000.0 + 15 * 60
    assert attempt(app, "ann", PASSWORD, "10.0.2.3").status_code == 303


def test_an_address_is_locked_for_every_name_known_or_not(registry):
    clock = Clock()
    app = throttled_app(registry, clock)
    for name in ("nobody", "ann", "somebody", "bob", "anyone"):
        assert attempt(app, name, "wrong password", "10.0.3.1").status_code == 401
    refused = attempt(app, "ann", PASSWORD, "10.0.3.1")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == str(15 * 60)
    assert attempt(app, "ann", PASSWORD, "10.0.3.2").status_code == 303
    clock.now += 15 * 60
    assert attempt(app, "ann", PASSWORD, "10.0.3.1").status_code == 303


def test_unknown_and_known_names_lock_alike_and_a_success_clears_the_name(registry):
    clock = Clock()
    app = throttled_app(registry, clock)
    for i in range(5):
        attempt(app, "nobody", "wrong password", f"10.0.4.{i}")
    assert attempt(app, "nobody", "wrong password", "10.0.5.1").status_code == 429
    for i in range(4):
        attempt(app, "bob", "wrong password", f"10.0.6.{i}")
    assert attempt(app, "bob", PASSWORD, "10.0.7.1").status_code == 303
    for i in range(4):
        assert attempt(app, "bob", "wrong password", f"10.0.8.{i}").status_code == 401


def test_attempts_in_flight_count_so_parallel_guesses_cannot_slip_past():
    from tunewright.review.web.auth import LoginThrottle

    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    keys = ["name:ann", "address:10.0.0.9"]
    stamps = []
    for _ in range(5):  # five started, none finished yet
        assert throttle.retry_after(keys) == 0
        stamps.append(throttle.attempt(keys))
    assert throttle.retry_after(keys) == 15 * 60
    throttle.succeeded(stamps[0], keys, clear=keys[:1])
    assert throttle.retry_after(["name:ann"]) == 0 and throttle.retry_after(["address:10.0.0.9"]) == 0


def test_the_throttle_forgets_names_when_full():
    from tunewright.review.web.auth import LoginThrottle

    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_keys=10)
    for i in range(100):
        throttle.attempt([f"name:n{i}"])
    assert len(throttle._failures) <= 10


# -- 3. one scrypt whether or not the name exists --------------------------------------------------


def test_an_unknown_name_costs_one_scrypt_with_the_same_parameters_as_a_wrong_password(registry, scrypt_calls):
    assert not authenticate(registry, "ann", "wrong password")
    known = list(scrypt_calls)
    scrypt_calls.clear()
    assert not authenticate(registry, "nobody", "wrong password")
    assert len(known) == 1 and scrypt_calls == known


def test_log_in_pages_cost_one_scrypt_for_known_and_unknown_names(registry, scrypt_calls):
    client = client_for(registry)
    token = csrf_of(client.get("/login").text)
    counts = []
    for name in ("ann", "nobody"):
        scrypt_calls.clear()
        assert client.post("/login", data={"name": name, "password": "wrong password", "csrf": token}).status_code == 401
        counts.append(len(scrypt_calls))
    assert counts == [1, 1]


# -- 4. sessions checked against the reviewer --------------------------------------------------------


def _logged_in(client: TestClient) -> bool:
    return client.get("/", follow_redirects=False).status_code == 200


def test_a_session_ends_when_the_reviewer_row_is_deleted(registry, ids, store):
    client = client_for(registry)
    token = login(client, "ann")
    registry.write(lambda s: s.execute(delete(t.Reviewer).where(t.Reviewer.name == "ann")))
    assert not _logged_in(client)
    response = decide(client, token, ids["tent-price"], decision="accept")
    assert response.status_code == 401 and response.json() == {"error": "log in first"}
    assert store.reviews() == []


def test_revoking_ends_every_session_of_that_reviewer_only(registry, ids):
    from tunewright.review.reviewers import revoke_sessions

    ann_laptop, ann_phone, bob = client_for(registry), client_for(registry), client_for(registry)
    login(ann_laptop, "ann")
    login(ann_phone, "ann")
    login(bob, "bob")
    revoke_sessions(registry, "ann")
    assert not _logged_in(ann_laptop) and not _logged_in(ann_phone) and _logged_in(bob)
    assert "Your session has ended" in ann_laptop.get("/login").text
    login(ann_laptop, "ann")  # the password still works for a new session
    assert _logged_in(ann_laptop) and not _logged_in(ann_phone)
    assert [e.action for e in registry.events()][-1] == "review.reviewer_sessions_revoked"


def test_a_password_change_ends_old_sessions_and_the_old_password(registry, ids):
    from tunewright.review.reviewers import set_password

    client = client_for(registry)
    login(client, "ann")
    set_password(registry, "ann", "a brand new password")
    assert not _logged_in(client)
    token = csrf_of(client.get("/login").text)
    assert client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token}).status_code == 401
    login(client, "ann", "a brand new password")
    assert _logged_in(client)
    with pytest.raises(TunewrightError, match="at least 8"):
        set_password(registry, "ann", "short")
    with pytest.raises(TunewrightError, match="unknown reviewer 'nobody'"):
        set_password(registry, "nobody", "long enough password")


def test_removing_and_adding_the_name_again_does_not_revive_old_sessions(registry, ids):
    from tunewright.review.reviewers import remove_reviewer

    client = client_for(registry)
    login(client, "ann")
    old_cookies = dict(client.cookies)
    remove_reviewer(registry, "ann")
    add_reviewer(registry, "ann", PASSWORD)
    fresh = client_for(registry)
    fresh.cookies.update(old_cookies)
    assert not _logged_in(fresh)


def test_a_signed_cookie_from_before_epochs_is_not_accepted(registry, ids):
    from itsdangerous import TimestampSigner

    data = base64.b64encode(json.dumps({"reviewer": "ann", "csrf": "t" * 43}).encode())
    client = client_for(registry)
    client.cookies.set("tunewright_review", TimestampSigner(SECRET).sign(data).decode())
    assert not _logged_in(client)


# -- 5. removing a reviewer from the CLI -------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    from tunewright.config import Recipe
    from tunewright.workspace import Workspace

    ws = Workspace.init(tmp_path / "ws", Recipe(name="shop", base_model=str(tiny_model_dir)))
    add_reviewer(ws.registry, "ann", PASSWORD)
    add_reviewer(ws.registry, "bob", PASSWORD)
    return ws


def test_cli_remove_reviewer_deletes_the_account_ends_sessions_and_is_audited(workspace, capsys, monkeypatch):
    from helpers import run_cli

    from tunewright.review.reviewers import reviewer_names

    client = client_for(workspace.registry)
    login(client, "ann")
    monkeypatch.setenv("TUNEWRIGHT_ACTOR", "admin")
    code, out, err = run_cli(["--workspace", workspace.root, "review", "remove-reviewer", "ann"], capsys)
    assert code == 0, err
    assert "reviewer ann removed" in out
    assert reviewer_names(workspace.registry) == ["bob"]
    assert not _logged_in(client)
    event = workspace.registry.events()[-1]
    assert (event.action, event.subject_id, event.actor) == ("review.reviewer_removed", "ann", "admin")
    token = csrf_of(client.get("/login").text)
    assert client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": token}).status_code == 401


@pytest.mark.parametrize("command", ["remove-reviewer", "revoke-sessions"])
def test_cli_unknown_reviewer_is_one_line_and_exit_2(workspace, capsys, command):
    from helpers import run_cli

    before = len(workspace.registry.events())
    code, out, err = run_cli(["--workspace", workspace.root, "review", command, "nobody"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "unknown reviewer 'nobody' (known: ann, bob)" in err
    assert "Traceback" not in err
    assert len(workspace.registry.events()) == before


def test_cli_revoke_sessions_and_set_password(workspace, capsys, monkeypatch):
    from helpers import run_cli

    client = client_for(workspace.registry)
    login(client, "bob")
    code, out, err = run_cli(["--workspace", workspace.root, "review", "revoke-sessions", "bob"], capsys)
    assert code == 0 and "sessions of reviewer bob ended" in out
    assert not _logged_in(client)
    login(client, "bob")
    monkeypatch.setenv("NEW_PASSWORD", "another long password")
    code, out, err = run_cli(["--workspace", workspace.root, "review", "set-password", "bob",
                              "--password-env", "NEW_PASSWORD"], capsys)
    assert code == 0 and "password of reviewer bob changed" in out
    assert not _logged_in(client)
    assert authenticate(workspace.registry, "bob", "another long password")


def test_a_non_ascii_csrf_token_is_a_403_not_a_500(registry):
    client = client_for(registry)
    client.get("/login")  # a session with a token
    refused = client.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": "jeton-\u00e9t\u00e9"},
                          follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
