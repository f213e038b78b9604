"""The OpenAI-compatible teacher over real HTTP: retries, timeouts, bad answers, cache, secrets."""

from __future__ import annotations

import logging

import pytest

from tunewright.errors import TunewrightError
from tunewright.synth.teachers import (TEACHERS, CallCache, OpenAICompatibleSpec, OpenAICompatibleTeacher,
                                       TeacherError, TeacherRequest)

from scripted_openai import ScriptedServer


def _teacher(server, tmp_path=None, **overrides):
    spec = OpenAICompatibleSpec(**{"base_url": server.url, "model": "teacher-1", "backoff_s": 0.0, "max_retries": 2,
                                   "timeout_s": 2.0, **overrides})
    return OpenAICompatibleTeacher(spec, CallCache(tmp_path / "cache") if tmp_path else None)


def _ask(text):
    return TeacherRequest.chat([{"role": "user", "content": text}], temperature=0.0, max_tokens=32)


def test_answer_and_accounting():
    with ScriptedServer() as server:
        teacher = _teacher(server, prompt_usd_per_1k_tokens=1.0, completion_usd_per_1k_tokens=2.0)
        completion = teacher.complete(_ask("hi"))
    assert completion.text == "echo: hi" and not completion.cached
    sent = server.requests[0]["body"]
    assert sent["model"] == "teacher-1" and sent["messages"] == [{"role": "user", "content": "hi"}]
    assert teacher.usage.calls == 1 and teacher.usage.prompt_tokens == 10 and teacher.usage.completion_tokens == 5
    assert teacher.usage.cost_usd == pytest.approx(0.02)


def test_429_is_retried_after_retry_after():
    with ScriptedServer([("status", (429, {"Retry-After": "0"})), ("answer", "done")]) as server:
        teacher = _teacher(server)
        assert teacher.complete(_ask("x")).text == "done"
    assert len(server.requests) == 2 and teacher.usage.retries == 1


def test_timeout_is_retried():
    with ScriptedServer([("sleep", 1.0), ("answer", "late but fine")]) as server:
        teacher = _teacher(server, timeout_s=0.3)
        assert teacher.complete(_ask("x")).text == "late but fine"
    assert teacher.usage.retries == 1


def test_malformed_and_empty_answers_fail_without_retry():
    with ScriptedServer([("malformed", None), ("empty", None)]) as server:
        teacher = _teacher(server)
        with pytest.raises(TeacherError, match="malformed"):
            teacher.complete(_ask("a"))
        with pytest.raises(TeacherError, match="empty"):
            teacher.complete(_ask("b"))
    assert len(server.requests) == 2 and teacher.usage.failed_calls == 2


def test_client_errors_are_not_retried():
    with ScriptedServer([("status", (400, {}))]) as server:
        with pytest.raises(TeacherError, match="status 400"):
            _teacher(server).complete(_ask("x"))
    assert len(server.requests) == 1


def test_round_continues_past_failures_and_rerun_repeats_no_paid_call(tmp_path):
    requests = [_ask(f"q{i}") for i in range(4)]
    with ScriptedServer([("malformed", None)]) as server:
        first = _teacher(server, tmp_path, concurrency=1)
        results = first.complete_many(requests)
    assert sum(isinstance(r, TeacherError) for r in results) == 1
    assert first.usage.calls == 3 and first.usage.failed_calls == 1

    with ScriptedServer() as server:
        second = _teacher(server, tmp_path, concurrency=2)
        rerun = second.complete_many(requests)
    assert all(not isinstance(r, TeacherError) for r in rerun)
    assert len(server.requests) == 1  # only the call that failed last time is made again
    assert second.usage.cached_calls == 3 and second.usage.calls == 1


def test_server_gone_is_a_connection_failure():
    with ScriptedServer() as server:
        url = server.url
    teacher = OpenAICompatibleTeacher(OpenAICompatibleSpec(base_url=url, model="m", max_retries=1, backoff_s=0.0))
    results = teacher.complete_many([_ask("x")])
    assert isinstance(results[0], TeacherError) and results[0].kind == "connection"


def test_api_key_is_sent_but_never_shown(monkeypatch, caplog):
    secret = "sk-test-very-secret-123"
    monkeypatch.setenv("TEACHER_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with ScriptedServer([("status", (503, {})), ("status", (503, {})), ("status", (503, {}))]) as server:
        teacher = _teacher(server, api_key_env="TEACHER_KEY")
        with pytest.raises(TeacherError) as info:
            teacher.complete(_ask("x"))
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    assert secret not in str(info.value) and secret not in repr(teacher) and secret not in caplog.text
    assert secret not in str(teacher.usage.to_json())


def test_missing_api_key_is_a_clear_error_before_any_call(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(TunewrightError, match="environment variable NO_SUCH_KEY is not set"):
        OpenAICompatibleTeacher(OpenAICompatibleSpec(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="NO_SUCH_KEY"))


def test_teacher_is_registered():
    assert TEACHERS.get_class("openai-compatible") is OpenAICompatibleTeacher


def test_judge_scores_flags_and_keeps_rationale():
    from tunewright.data.schema import ChatRow
    from tunewright.synth.filters import Candidate, FilterContext, run_filters
    from tunewright.synth.filters.judge import Judge

    rows = [Candidate(f"c{i}", ChatRow(messages=[{"role": "user", "content": f"q{i}"},
                                                {"role": "assistant", "content": f"a{i}"}])) for i in range(4)]
    script = [("answer", '{"score": 5, "rationale": "grounded"}'),
              ("answer", 'Sure! ```json\n{"score": 2, "rationale": "vague"}\n```'),
              ("answer", "I think it is fine."),
              ("malformed", None)]
    with ScriptedServer(script) as server:
        judge = Judge(_teacher(server, max_retries=0, concurrency=1), rubric="Is the answer grounded?", threshold=4)
        counts = run_filters([judge], rows, FilterContext())
    assert counts == {"judge": 3}
    assert rows[0].kept and rows[0].row.meta["judge"] == {"score": 5, "rationale": "grounded"}
    assert rows[1].flags[0].reason == "score 2 < 4: vague" and rows[1].row.meta["judge"]["score"] == 2
    assert "unreadable verdict" in rows[2].flags[0].reason
    assert "not scored: malformed" in rows[3].flags[0].reason
    assert "Is the answer grounded?" in server.requests[0]["body"]["messages"][0]["content"]
