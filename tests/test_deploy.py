"""Deployment aliases, exports and feedback in the registry; the alias, serve and drift commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from helpers import run_cli
from serve_helpers import free_port, serve_workspace


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    return serve_workspace(tmp_path / "ws", tiny_model_dir, {"alpha": {"seed": 1}, "beta": {"seed": 2}})


def test_rollback_walks_back_through_history_and_stops_at_the_start(workspace):
    from tunewright.errors import TunewrightError
    from tunewright.registry.deploy import DeploymentStore

    store = DeploymentStore(workspace.registry)
    with pytest.raises(TunewrightError, match="no earlier state"):
        store.rollback("production")
    store.set_alias("production", "alpha")
    store.set_alias("production", "beta")
    store.split("production", "alpha", 25)
    assert store.rollback("production").split_adapter is None  # the split is undone first
    assert store.rollback("production").adapter.name == "alpha"
    with pytest.raises(TunewrightError, match="no earlier state"):
        store.rollback("production")
    assert [s.action for s in store.history("production")] == ["set", "set", "split", "rollback", "rollback"]
    ok, _ = workspace.registry.verify_events()
    assert ok


def test_alias_mistakes_are_refused_without_writing(workspace):
    from tunewright.errors import NotFoundError, TunewrightError
    from tunewright.registry.deploy import DeploymentStore

    store = DeploymentStore(workspace.registry)
    before = len(workspace.registry.events())
    with pytest.raises(TunewrightError, match="unknown alias 'prod'"):
        store.set_alias("prod", "alpha")
    with pytest.raises(NotFoundError, match="'gamma' is not registered"):
        store.set_alias("production", "gamma")
    with pytest.raises(NotFoundError, match="version 7"):
        store.set_alias("production", "alpha", version=7)
    with pytest.raises(NotFoundError, match="points at nothing"):
        store.split("production", "beta", 10)
    with pytest.raises(NotFoundError, match="points at nothing"):
        store.promote("staging", "production")
    store.set_alias("production", "alpha")
    with pytest.raises(TunewrightError, match="between 0 and 100"):
        store.split("production", "beta", 150)
    assert len(workspace.registry.events()) == before + 1


def test_failed_export_check_is_never_registered(workspace):
    from tunewright.errors import TunewrightError
    from tunewright.registry.deploy import DeploymentStore

    store = DeploymentStore(workspace.registry)
    with pytest.raises(TunewrightError, match="failed its parity check"):
        store.add_export(model_ref="alpha", adapter_id=1, path="x", formats=["gguf"], files={},
                         check={"passed": False}, files_sha256={})
    record = store.add_export(model_ref="alpha", adapter_id=1, path="x", formats=["gguf"], files={"gguf": "x/m.gguf"},
                              check={"passed": True, "max_logit_diff": {"gguf": 1e-5}}, files_sha256={"gguf": "ab"})
    assert store.exports() == [record]
    assert any(edge["relation"] == "exported" for edge in workspace.registry.lineage("adapter", 1))


def test_alias_commands(workspace, capsys):
    ws = str(workspace.root)
    code, out, err = run_cli(["-w", ws, "registry", "alias", "set", "staging", "beta@1"], capsys)
    assert code == 0 and "staging -> beta@1" in out
    code, out, _ = run_cli(["-w", ws, "registry", "alias", "promote"], capsys)
    assert code == 0 and "production -> beta@1" in out
    code, out, _ = run_cli(["-w", ws, "registry", "alias", "split", "production", "alpha", "--percent", "10"], capsys)
    assert code == 0 and "10% to alpha@1" in out
    code, out, _ = run_cli(["-w", ws, "registry", "alias", "show"], capsys)
    assert code == 0 and "production" in out and "split by tester" in out
    code, out, _ = run_cli(["-w", ws, "registry", "alias", "rollback"], capsys)
    assert code == 0 and "production -> beta@1" in out and "%" not in out
    code, _, err = run_cli(["-w", ws, "registry", "alias", "set", "prod", "alpha"], capsys)
    assert code == 2 and "unknown alias 'prod'" in err
    code, _, err = run_cli(["-w", ws, "registry", "alias", "set", "staging", "alpha@x"], capsys)
    assert code == 2 and "version must be a number" in err


def test_drift_command_needs_logs_then_reports(workspace, capsys):
    from tunewright.data.api import register_rows
    from helpers import qa_rows

    register_rows(workspace, workspace.recipe.dataset_name, qa_rows(40), spec={})
    code, _, err = run_cli(["-w", str(workspace.root), "drift"], capsys)
    assert code == 2 and "log_requests" in err
    logs = workspace.root / "logs" / "requests"
    logs.mkdir(parents=True)
    lines = [json.dumps({"ts": "2026-11-29T10:00:00+00:00", "request_id": f"r{i}", "model": "alpha", "served": "alpha",
                         "endpoint": "chat", "messages": [{"role": "user", "content": f"How much does item {i} cost?"}],
                         "response": "x", "prompt_tokens": 5, "completion_tokens": 1, "latency_s": 0.1,
                         "finish_reason": "stop"}) for i in range(12)]
    (logs / "2026-11-29.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(["-w", str(workspace.root), "drift"], capsys)
    assert code == 0, err
    assert "drift" in out and (workspace.root / "reports" / "drift" / "drift.html").is_file()


def test_serve_command_finishes_in_flight_requests_on_sigterm(workspace, tmp_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNEWRIGHT_ACTOR": "tester"}
    process = subprocess.Popen([sys.executable, "-m", "tunewright", "-w", str(workspace.root), "serve", "--port",
                                str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                pytest.fail("server exited: " + process.stdout.read())
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not come up: " + process.stdout.read())
        pieces, done = [], threading.Event()

        def stream():
            with httpx.stream("POST", url + "/v1/chat/completions", timeout=60, json={
                    "model": "alpha", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 300,
                    "stream": True, "stop": None}) as response:
                for line in response.iter_lines():
                    pieces.append(line)
                    if line == "data: [DONE]":
                        done.set()

        reader = threading.Thread(target=stream)
        reader.start()
        while len(pieces) < 3:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        reader.join(60)
        assert done.is_set(), pieces[-3:]  # the request that was running when SIGTERM came finished
        # uvicorn re-raises the signal once it has shut down, as service managers expect.
        assert process.wait(60) in (0, -signal.SIGTERM)
        assert "Traceback" not in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=1)


def test_export_command_checks_then_registers(workspace, capsys, tiny_model_dir):
    from serve_helpers import make_adapter
    from tunewright.registry.deploy import DeploymentStore

    ws = str(workspace.root)
    out = workspace.root / "exports" / "alpha-check"
    code, stdout, err = run_cli(["-w", ws, "export", "alpha", "--format", "merged,gguf,ollama,vllm", "--check",
                                 "--out", str(out), "--max-new-tokens", "8"], capsys)
    assert code == 0, err
    assert "registered export 1 (checked)" in stdout and "--lora-modules" in stdout
    [record] = DeploymentStore(workspace.registry).exports()
    assert record.check["passed"] and set(record.formats) == {"merged", "gguf", "ollama", "vllm"}
    assert (out / "alpha.gguf").is_file() and (out / "Modelfile").is_file() and (out / "check.json").is_file()
    event = [e for e in workspace.registry.events() if e.action == "export.registered"][-1]
    assert "gguf" in event.payload["files_sha256"]

    code, _, err = run_cli(["-w", ws, "export", "alpha", "--format", "onnx"], capsys)
    assert code == 2 and "unknown export format 'onnx'" in err
    code, _, err = run_cli(["-w", ws, "export", "alpha", "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err
    soft = make_adapter(tiny_model_dir, workspace.root / "adapters" / "soft", seed=3, kind="prompt")
    code, _, err = run_cli(["-w", ws, "export", str(soft), "--format", "gguf"], capsys)
    assert code == 2 and "cannot be exported as gguf" in err
    code, _, err = run_cli(["-w", ws, "export", "ghost"], capsys)
    assert code == 2 and "ghost" in err
    assert len(DeploymentStore(workspace.registry).exports()) == 1
