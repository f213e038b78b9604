"""Serving where it meets untrusted clients: who may use a keyless API, which Host names are
answered, what personal data is kept, how long stops may be, odd keys, big prompts, chunked bodies
over the limit, and what an internal error tells the client."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest

from helpers import run_cli
from serve_helpers import running_server, serve_workspace
from test_serve_admin import chat, post, serve


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    return serve_workspace(tmp_path_factory.mktemp("security") / "ws", tiny_model_dir, {"alpha": {"seed": 1}})


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# -- 1. a keyless API only on loopback, unless asked for ----------------------------------------


def test_a_keyless_api_on_a_non_loopback_host_needs_insecure(monkeypatch):
    from tunewright.config.serve import ServeSpec
    from tunewright.errors import TunewrightError
    from tunewright.serve.server import check_exposure

    for host in ["127.0.0.1", "localhost", "::1", "127.0.0.2"]:
        check_exposure(ServeSpec(host=host), frozenset())
    for host in ["0.0.0.0", "::", "10.1.2.3", "myhost.example"]:
        with pytest.raises(TunewrightError, match="without inference keys") as refused:
            check_exposure(ServeSpec(host=host), frozenset())
        assert "--insecure" in str(refused.value) and "TUNEWRIGHT_API_KEYS" in str(refused.value)
        assert "\n" not in str(refused.value)
        check_exposure(ServeSpec(host=host), frozenset({"key"}))
        check_exposure(ServeSpec(host=host, insecure=True), frozenset())


def test_the_serve_command_refuses_before_loading_and_insecure_lets_it_start(tmp_path, tiny_model_dir, capsys,
                                                                             monkeypatch):
    import uvicorn

    ws = serve_workspace(tmp_path / "ws", tiny_model_dir, {})
    monkeypatch.delenv("TUNEWRIGHT_API_KEYS", raising=False)
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append(kwargs))
    code, out, err = run_cli(["-w", ws.root, "serve", "--host", "0.0.0.0"], capsys)
    assert code == 2 and started == []
    assert "without inference keys" in err and "--insecure" in err
    code, out, err = run_cli(["-w", ws.root, "serve", "--host", "0.0.0.0", "--insecure"], capsys)
    assert code == 0, err
    assert started and started[0]["host"] == "0.0.0.0"
    assert "warning: no inference keys set" in err


# -- 2. Host allowlist against DNS rebinding ------------------------------------------------------


def test_requests_for_other_host_names_are_refused_before_any_route(workspace, monkeypatch):
    from tunewright.registry.deploy import DeploymentStore

    state = serve(workspace, monkeypatch)
    with running_server(state) as url:
        port = _port(url)
        reply = chat(url, "alpha")
        assert reply.status_code == 200
        request_id = reply.json()["id"]
        # What a page on attacker.example, re-resolved to 127.0.0.1, makes the browser send.
        rebound = httpx.post(url + "/v1/feedback", timeout=10, json={
            "request_id": request_id, "rating": "down", "correction": "injected"},
            headers={"authorization": "Bearer user-key", "host": f"attacker.example:{port}"})
        assert rebound.status_code == 421
        assert rebound.json()["error"]["code"] == "host_not_allowed"
        assert "serve.allowed_hosts" in rebound.json()["error"]["message"]
        assert httpx.get(url + "/health", headers={"host": "attacker.example"}, timeout=10).status_code == 421
        assert httpx.get(url + "/health", headers={"host": f"localhost:{port + 1}"}, timeout=10).status_code == 421
        for host in [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"]:
            assert httpx.get(url + "/health", headers={"host": host}, timeout=10).status_code == 200, host
    assert not [f for f in DeploymentStore(workspace.registry).feedback() if f["request_id"] == request_id]

    state = serve(workspace, monkeypatch, allowed_hosts=["api.example.com", "other.example:9"])
    with running_server(state) as url:
        def health(host):
            return httpx.get(url + "/health", headers={"host": host}, timeout=10).status_code
        assert health("api.example.com") == 200 and health(f"api.example.com:{_port(url)}") == 200
        assert health("other.example:9") == 200 and health("other.example:10") == 421
        assert health(f"127.0.0.1:{_port(url)}") == 421  # a configured list replaces the default


def test_the_default_allowlist_adds_the_bound_host_unless_a_wildcard():
    from tunewright.serve.guards import default_allowed_hosts

    assert default_allowed_hosts("0.0.0.0", 8000) == ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"]
    assert default_allowed_hosts("::", 8000) == ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"]
    assert default_allowed_hosts("10.0.0.5", 80)[-1] == "10.0.0.5:80"
    assert default_allowed_hosts("fd00::5", 80)[-1] == "[fd00::5]:80"
    assert default_allowed_hosts("127.0.0.1", 80) == ["localhost:80", "127.0.0.1:80", "[::1]:80"]


# -- 3 and 7. personal data in feedback and in the recent answers ---------------------------------


def test_feedback_texts_and_recent_answers_are_stored_redacted(workspace, monkeypatch):
    from tunewright.registry.deploy import DeploymentStore

    def feedback_row(url, state, message):
        reply = post(url, "/v1/chat/completions", {"model": "alpha", "max_tokens": 4,
                                                   "messages": [{"role": "user", "content": message}]}, "user-key")
        request_id = reply.json()["id"]
        given = post(url, "/v1/feedback", {"request_id": request_id, "rating": "down",
                                           "correction": "Mail me at jo@example.com",
                                           "comment": "call 404-555-0199"}, "user-key")
        assert given.status_code == 200, given.text
        [row] = [f for f in DeploymentStore(workspace.registry).feedback() if f["request_id"] == request_id]
        return row, state.recent.get(request_id)

    state = serve(workspace, monkeypatch)
    with running_server(state) as url:
        row, recent = feedback_row(url, state, "I am ann@example.org")
    assert row["correction"] == "Mail me at [EMAIL]" and row["comment"] == "call [PHONE]"
    assert recent["messages"][-1]["content"] == "I am [EMAIL]"

    state = serve(workspace, monkeypatch, redact_pii=False)
    with running_server(state) as url:
        row, recent = feedback_row(url, state, "I am ann@example.org")
    assert row["correction"] == "Mail me at jo@example.com" and row["comment"] == "call 404-555-0199"
    assert recent["messages"][-1]["content"] == "I am ann@example.org"


def test_recent_answers_are_capped_by_bytes_as_well_as_count():
    from tunewright.serve.monitoring import RecentResponses

    def record(text):
        return {"prompt": "q", "response": text, "model": "m"}

    recent = RecentResponses(limit=100, max_bytes=3000, redact_pii=False)
    for i in range(3):
        recent.add(f"r{i}", record("x" * 1000))
    assert recent.get("r0") is None and recent.get("r1") and recent.get("r2")
    assert recent.total_bytes <= 3000 and len(recent) == 2
    recent.add("huge", record("é" * 2000))  # 4,000 bytes: over the whole cap, so never kept
    assert recent.get("huge") is None and recent.get("r1") and recent.get("r2")

    by_count = RecentResponses(limit=2, max_bytes=10**9, redact_pii=False)
    for i in range(3):
        by_count.add(f"r{i}", record("x"))
    assert by_count.get("r0") is None and len(by_count) == 2

    redacting = RecentResponses(redact_pii=True)
    redacting.add("r", {"messages": [{"role": "user", "content": "I am jo@example.com"}], "response": "404-555-0199"})
    assert redacting.get("r")["messages"][0]["content"] == "I am [EMAIL]"
    assert redacting.get("r")["response"] == "[PHONE]"


# -- 4. stop strings: how many, how long ----------------------------------------------------------


def test_stop_strings_are_capped_in_number_and_length(workspace, monkeypatch):
    state = serve(workspace, monkeypatch)
    with running_server(state) as url:
        long_stop = chat(url, "alpha", stop=["ab", "x" * 257])
        assert long_stop.status_code == 400
        error = long_stop.json()["error"]
        assert error["param"] == "stop" and "256 characters" in error["message"]
        assert chat(url, "alpha", stop="y" * 257).status_code == 400
        assert chat(url, "alpha", stop=["a", "b", "c", "d", "e"]).json()["error"]["param"] == "stop"
        assert chat(url, "alpha", stop=["x" * 256, "a", "b", "c"]).status_code == 200


# -- 5. non-ASCII keys ----------------------------------------------------------------------------


def test_non_ascii_keys_are_compared_as_bytes(workspace, monkeypatch):
    state = serve(workspace, monkeypatch)
    state.inference_keys = frozenset({"user-key", "clé-ü"})
    with running_server(state) as url:
        def models(token: bytes):
            return httpx.get(url + "/v1/models", headers={"authorization": b"Bearer " + token}, timeout=10)
        wrong = models("naïve".encode())
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert models("naïve".encode("latin-1")).status_code == 401
        assert models("clé-ü".encode()).status_code == 200  # a UTF-8 key sent as UTF-8 works
        admin = httpx.get(url + "/admin/adapters", headers={"authorization": "Bearer ключ".encode()}, timeout=10)
        assert admin.status_code == 401


# -- 6. tokenising off the event loop -------------------------------------------------------------


class _RecordingTokenizer:
    """The real tokenizer, noting for every call whether an event loop runs on the calling thread."""

    def __init__(self, inner) -> None:
        self.inner, self.on_event_loop = inner, []

    def _note(self) -> None:
        try:
            asyncio.get_running_loop()
            self.on_event_loop.append(True)
        except RuntimeError:
            self.on_event_loop.append(False)

    def __call__(self, *args, **kwargs):
        self._note()
        return self.inner(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self._note()
        return self.inner.apply_chat_template(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_prompts_are_tokenised_off_the_event_loop(workspace, monkeypatch):
    state = serve(workspace, monkeypatch)
    recorder = state.tokenizer = _RecordingTokenizer(state.tokenizer)
    with running_server(state) as url:
        assert chat(url, "alpha").status_code == 200
        assert post(url, "/v1/completions", {"model": "alpha", "prompt": "hello world", "max_tokens": 4},
                    "user-key").status_code == 200
    assert len(recorder.on_event_loop) == 3 and not any(recorder.on_event_loop)


# -- 8. chunked bodies over the limit -------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_413_and_one_under_it_is_served(workspace, monkeypatch):
    import json

    from tunewright.serve.app import create_app

    state = serve(workspace, monkeypatch)
    limit = state.spec.max_request_bytes

    async def over_the_limit():
        async def chunks():  # no length known up front: sent with Transfer-Encoding: chunked
            for _ in range(limit // 65536 + 2):
                yield b"x" * 65536
        # In-process ASGI: the refusal is answered while the body is still coming, which over a
        # socket can race the client's own writing.
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            return await client.post("/v1/completions", content=chunks(), headers={
                "authorization": "Bearer user-key", "content-type": "application/json"})
    refused = asyncio.run(over_the_limit())
    assert refused.request.headers.get("transfer-encoding") == "chunked"
    assert refused.status_code == 413 and str(limit) in refused.json()["error"]["message"]

    body = json.dumps({"model": "alpha", "prompt": "hello world", "max_tokens": 4}).encode()
    with running_server(state) as url:
        served = httpx.post(url + "/v1/completions", content=iter([body[:10], body[10:]]), timeout=60,
                            headers={"authorization": "Bearer user-key", "content-type": "application/json"})
    assert served.request.headers.get("transfer-encoding") == "chunked"
    assert served.status_code == 200, served.text


# -- 9. internal errors ---------------------------------------------------------------------------

SECRET = "RuntimeError at /home/operator/.cache/secret-token-4242"


def _broken(*args, **kwargs):
    raise RuntimeError(SECRET)


def test_an_unexpected_error_in_a_route_answers_a_request_id_and_logs_the_details(workspace, monkeypatch, caplog):
    state = serve(workspace, monkeypatch)
    caplog.set_level(logging.ERROR, logger="tunewright")
    with running_server(state) as url:
        with monkeypatch.context() as patch:
            patch.setattr(state, "with_records", _broken)
            crashed = chat(url, "alpha")
        assert chat(url, "alpha").status_code == 200  # and it still serves
    assert crashed.status_code == 500 and SECRET not in crashed.text
    error = crashed.json()["error"]
    assert error["type"] == "server_error"
    error_id = crashed.headers["x-request-id"]
    assert error_id in error["message"]
    assert any(error_id in r.getMessage() for r in caplog.records) and SECRET in caplog.text


def test_a_generation_failure_answers_a_request_id_and_logs_the_details(workspace, monkeypatch, caplog):
    state = serve(workspace, monkeypatch)
    caplog.set_level(logging.ERROR, logger="tunewright")
    with running_server(state) as url:
        with monkeypatch.context() as patch:
            patch.setattr(state.engine, "_generate", _broken)
            failed = chat(url, "alpha")
            streamed = chat(url, "alpha", stream=True)
        assert chat(url, "alpha").status_code == 200
    assert failed.status_code == 500 and SECRET not in failed.text
    request_id = re.search(r"request id (chatcmpl-\w+)", failed.json()["error"]["message"]).group(1)
    assert any(r.name == "tunewright.serve.engine" and request_id in r.getMessage() for r in caplog.records)
    assert SECRET in caplog.text
    assert SECRET not in streamed.text and streamed.headers["x-request-id"] in streamed.text
