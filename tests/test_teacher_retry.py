"""The OpenAI-compatible teacher against hostile Retry-After values, and its warning for plain-http keys."""

from __future__ import annotations

import logging
import math
import time
import warnings
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from tunewright.synth.teachers import OpenAICompatibleSpec, OpenAICompatibleTeacher, TeacherError, TeacherRequest
from tunewright.synth.teachers import openai_compat

from scripted_openai import ScriptedServer

PAST_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
BACKOFF_S = 5.0  # the normal first backoff, told apart from what a Retry-After asks for
CAP_S = 60.0  # the most a Retry-After may make the teacher wait


class FakeTime:
    """Stands in for the teacher module's ``time``: waits are recorded, never slept, and they are
    checked the way ``time.sleep`` checks them, so a value that would abort a real round fails here."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"time.sleep would refuse {seconds!r}")
        self.waits.append(seconds)

    monotonic = staticmethod(time.monotonic)  # the rate limiter's clock stays real

    def time(self) -> float:
        return self.now


def _ask(text):
    return TeacherRequest.chat([{"role": "user", "content": text}], temperature=0.0, max_tokens=32)


def _teacher(url, **overrides):
    spec = OpenAICompatibleSpec(**{"base_url": url, "model": "teacher-1", "backoff_s": BACKOFF_S,
                                   "max_backoff_s": 600.0, "max_retries": 2, "timeout_s": 5.0, **overrides})
    return OpenAICompatibleTeacher(spec)


@pytest.mark.parametrize(("header", "expected_wait"), [
    ("-1", 0.0),                         # negative: clamped, never handed to sleep
    ("nan", BACKOFF_S),                  # not a number: the normal backoff
    ("inf", BACKOFF_S),
    ("-inf", BACKOFF_S),
    ("1e12", CAP_S),  # huge: capped even though max_backoff_s allows more
    ("9" * 400, BACKOFF_S),              # so large it parses as infinity
    (PAST_DATE, 0.0),                    # a moment already gone: retry now
    ("soon, I promise", BACKOFF_S),      # neither seconds nor a date
    ("", BACKOFF_S),
])
def test_bad_retry_after_is_retried_not_fatal(monkeypatch, header, expected_wait):
    clock = FakeTime()
    monkeypatch.setattr(openai_compat, "time", clock)
    with ScriptedServer([("status", (429, {"Retry-After": header})), ("answer", "done")]) as server:
        teacher = _teacher(server.url)
        assert teacher.complete(_ask("x")).text == "done"
    assert len(server.requests) == 2 and teacher.usage.retries == 1
    assert clock.waits == [pytest.approx(expected_wait)]


def test_a_round_survives_every_bad_retry_after(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(openai_compat, "time", clock)
    headers = ["-1", "nan", "inf", "1e12", PAST_DATE]
    script = [step for h in headers for step in (("status", (503, {"Retry-After": h})), ("answer", None))]
    with ScriptedServer(script) as server:
        teacher = _teacher(server.url, concurrency=1)
        results = teacher.complete_many([_ask(f"q{i}") for i in range(len(headers))])
    assert not [r for r in results if isinstance(r, TeacherError)]
    assert len(clock.waits) == len(headers)
    assert all(0.0 <= w <= CAP_S for w in clock.waits)


def test_retry_after_date_in_the_future_is_honoured_from_an_injected_clock(monkeypatch):
    when = "Sun, 06 Nov 2044 08:49:37 GMT"
    clock = FakeTime(now=parsedate_to_datetime(when).timestamp() - 12)
    monkeypatch.setattr(openai_compat, "time", clock)
    with ScriptedServer([("status", (429, {"Retry-After": when}))]) as server:
        assert _teacher(server.url).complete(_ask("x")).text == "echo: x"
    assert clock.waits == [pytest.approx(12.0)]


def test_retry_after_never_exceeds_the_configured_backoff_ceiling(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(openai_compat, "time", clock)
    with ScriptedServer([("status", (429, {"Retry-After": "45"}))]) as server:
        _teacher(server.url, max_backoff_s=2.0).complete(_ask("x"))
    assert clock.waits == [2.0]


@pytest.mark.parametrize(("value", "seconds"), [
    ("0", 0.0), ("7", 7.0), (" 2.5 ", 2.5), ("-3", 0.0), ("61", 60.0), ("1e400", None), ("NaN", None),
    ("Infinity", None), (None, None), ("Wed, 21 Oct 2015 07:28:00", 0.0), ("Mon, 99 Foo 0000 99:99:99 GMT", None),
])
def test_retry_after_parsing(value, seconds):
    now = parsedate_to_datetime(PAST_DATE).timestamp() + 3600
    assert openai_compat.retry_after_seconds(value, now=now) == seconds


def test_http_date_relative_to_now():
    now = 1_900_000_000.0
    in_ten = format_datetime(datetime.fromtimestamp(now + 10, tz=timezone.utc), usegmt=True)
    assert openai_compat.retry_after_seconds(in_ten, now=now) == pytest.approx(10.0)


# -- the API key over plain http ------------------------------------------------------------------

def _build(url, monkeypatch, *, key=True):
    if key:
        monkeypatch.setenv("TEACHER_KEY", "sk-secret-value-123")
    spec = OpenAICompatibleSpec(base_url=url, model="m", api_key_env="TEACHER_KEY" if key else None)
    return OpenAICompatibleTeacher(spec)


@pytest.mark.parametrize("url", ["http://teacher.example.com/v1", "http://10.0.0.7:8000/v1",
                                 "HTTP://Teacher.Example.com:80/v1", "http://[2001:db8::1]:8000/v1",
                                 "http://user:pw@teacher.example.com/v1"])
def test_api_key_over_plain_http_to_another_host_warns(url, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=openai_compat.__name__)
    with pytest.warns(openai_compat.InsecureTeacherURLWarning, match="unencrypted") as record:
        _build(url, monkeypatch)
    assert len(record) == 1
    logged = [r for r in caplog.records if r.name == openai_compat.__name__ and r.levelno == logging.WARNING]
    assert len(logged) == 1 and "unencrypted" in logged[0].getMessage()
    text = str(record[0].message) + caplog.text
    assert "sk-secret-value-123" not in text and "pw@" not in text


@pytest.mark.parametrize("url", ["https://teacher.example.com/v1", "http://127.0.0.1:8000/v1",
                                 "http://127.8.9.10/v1", "http://localhost:11434/v1", "http://LOCALHOST./v1",
                                 "http://[::1]:8000/v1", "http://[::ffff:127.0.0.1]:8000/v1"])
def test_no_warning_for_https_or_loopback(url, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger=openai_compat.__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _build(url, monkeypatch)
    assert not [r for r in caplog.records if r.name == openai_compat.__name__]


def test_no_warning_without_an_api_key(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _build("http://teacher.example.com/v1", monkeypatch, key=False)
