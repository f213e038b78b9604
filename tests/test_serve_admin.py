"""Serving under operations: keys, admin load/unload/combine, path traversal, corrupt adapters,
a full queue, timeouts, aliases with an A/B split, and opt-in request logs."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from serve_helpers import make_adapter, running_server, serve_workspace

ADAPTERS = {"alpha": {"seed": 1}, "beta": {"seed": 2}}
CHAT = {"messages": [{"role": "user", "content": "hello world"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    return serve_workspace(tmp_path_factory.mktemp("admin") / "ws", tiny_model_dir, ADAPTERS)


def serve(workspace, monkeypatch, **spec):
    from tunewright.serve.server import build_state

    monkeypatch.setenv("TUNEWRIGHT_API_KEYS", "user-key")
    monkeypatch.setenv("TUNEWRIGHT_ADMIN_KEYS", "admin-key")
    return build_state(workspace, workspace.recipe.serve.model_copy(update=spec))


def post(url, path, body, key="admin-key"):
    return httpx.post(url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)


def chat(url, model, key="user-key", **extra):
    return post(url, "/v1/chat/completions", {"model": model, **CHAT, **extra}, key)


def test_keys_separate_inference_from_admin(workspace, monkeypatch):
    state = serve(workspace, monkeypatch)
    with running_server(state) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        assert chat(url, "alpha").status_code == 200
        assert post(url, "/admin/adapters", {"adapter": "beta", "name": "b2"}, key="user-key").status_code == 401
        assert httpx.get(url + "/admin/adapters", timeout=10).status_code == 401
    monkeypatch.delenv("TUNEWRIGHT_ADMIN_KEYS")
    from tunewright.serve.server import build_state

    with running_server(build_state(workspace)) as url:
        off = post(url, "/admin/adapters", {"adapter": "beta", "name": "b2"})
        assert off.status_code == 403 and "TUNEWRIGHT_ADMIN_KEYS" in off.json()["error"]["message"]


def test_load_unload_combine_without_restart(workspace, monkeypatch, tiny_model_dir):
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from tunewright.models.loading import load_model

    def lora_weights(model, adapter):
        """Per LoRA layer: the adapter's A and B weights and its scaling."""
        return {name: (layer.lora_A[adapter].weight.detach().clone(), layer.lora_B[adapter].weight.detach().clone(),
                       layer.scaling[adapter])
                for name, layer in model.named_modules() if isinstance(layer, LoraLayer) and adapter in layer.lora_A}

    def peft_combination(sources, weights, method, density, seed):
        """peft's own ``add_weighted_adapter`` on a fresh base with the same adapter folders loaded."""
        folders = [str(state.pool.get(name).folder) for name in sources]
        model = PeftModel.from_pretrained(load_model(state.pool.base), folders[0], adapter_name="m0")
        for i, folder in enumerate(folders[1:], start=1):
            model.load_adapter(folder, adapter_name=f"m{i}")
        torch.manual_seed(seed)
        model.add_weighted_adapter([f"m{i}" for i in range(len(folders))], list(weights), "reference",
                                   combination_type=method, **({"density": density} if density is not None else {}))
        return lora_weights(model, "reference")

    state = serve(workspace, monkeypatch)
    make_adapter(tiny_model_dir, workspace.root / "adapters" / "extra", seed=9)
    with running_server(state) as url:
        assert chat(url, "extra").status_code == 404
        loaded = post(url, "/admin/adapters", {"path": "extra"})
        assert loaded.status_code == 200 and loaded.json()["mixed_batches"] is True
        extra_answer = chat(url, "extra").json()["choices"][0]["message"]["content"]
        assert extra_answer != chat(url, "base").json()["choices"][0]["message"]["content"]

        pinned = post(url, "/admin/adapters", {"adapter": "alpha@1", "name": "alpha-v1"})
        assert pinned.status_code == 200 and pinned.json()["source"] == "registry alpha@1"

        weights = [0.7, 0.3]  # unequal, so swapped or dropped weights show
        for seed, (method, extra) in enumerate([("linear", {}), ("cat", {}), ("ties", {"density": 0.5}),
                                                ("dare_linear", {"density": 0.5})]):
            # DARE drops entries at random from torch's global generator; the same seed just before
            # the call and before the reference makes both draw the same drops.
            torch.manual_seed(seed)
            combined = post(url, "/admin/combine", {"name": f"mix-{method}", "adapters": ["alpha", "beta"],
                                                     "weights": weights, "method": method, **extra})
            assert combined.status_code == 200, combined.text
            served = state.pool.get(f"mix-{method}")
            got = lora_weights(state.pool.shared.model, served.peft_name)
            expected = peft_combination(["alpha", "beta"], weights, method, extra.get("density"), seed)
            assert got.keys() == expected.keys() and got, method
            for layer, (a, b, scaling) in expected.items():
                assert got[layer][2] == pytest.approx(scaling), (method, layer)
                assert torch.allclose(got[layer][0], a, atol=1e-6) and torch.allclose(got[layer][1], b, atol=1e-6), \
                    (method, layer)
            assert chat(url, f"mix-{method}").status_code == 200
        bad_method = post(url, "/admin/combine", {"name": "m", "adapters": ["alpha", "beta"], "method": "median"})
        assert bad_method.status_code == 400 and "unknown combination" in bad_method.text
        no_density = post(url, "/admin/combine", {"name": "m", "adapters": ["alpha", "beta"], "method": "ties"})
        assert no_density.status_code == 400 and "density" in no_density.text

        assert httpx.delete(url + "/admin/adapters/extra", headers={"authorization": "Bearer admin-key"},
                            timeout=30).status_code == 200
        assert chat(url, "extra").status_code == 404
        assert chat(url, "alpha").status_code == 200  # the others keep serving
    changes = [e.payload["change"] for e in workspace.registry.events() if e.action == "serve.adapter_changed"]
    assert changes.count("loaded") >= 2 and changes.count("combined") == 4 and changes.count("unloaded") == 1


def test_admin_refuses_paths_outside_the_adapters_folder_and_corrupt_files(workspace, monkeypatch, tmp_path,
                                                                           tiny_model_dir):
    outside = make_adapter(tiny_model_dir, tmp_path / "outside", seed=7)
    (workspace.root / "adapters" / "escape").symlink_to(outside, target_is_directory=True)
    broken = make_adapter(tiny_model_dir, workspace.root / "adapters" / "broken", seed=8)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-50])
    state = serve(workspace, monkeypatch)
    with running_server(state) as url:
        for path in ["../../etc", str(outside), "escape", "alpha/../../.."]:
            refused = post(url, "/admin/adapters", {"path": path})
            assert refused.status_code == 400, (path, refused.text)
        assert post(url, "/admin/adapters", {"path": "missing"}).status_code == 404
        corrupt = post(url, "/admin/adapters", {"path": "broken"})
        assert corrupt.status_code == 400 and "corrupted adapter weights" in corrupt.json()["error"]["message"]
        assert post(url, "/admin/adapters", {"adapter": "nope"}).status_code == 404
        assert chat(url, "alpha").status_code == 200 and chat(url, "base").status_code == 200


def test_full_queue_answers_429_and_everything_else_is_served(workspace, monkeypatch):
    state = serve(workspace, monkeypatch, max_queue=2, max_batch_size=1, batch_wait_ms=0)
    with running_server(state) as url:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda i: chat(url, "alpha", max_tokens=60).status_code, range(16)))
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
    assert 'status="429"' in state.metrics.render().decode()


def test_timeout_answers_504(workspace, monkeypatch):
    state = serve(workspace, monkeypatch, request_timeout_s=0.001)
    with running_server(state) as url:
        reply = chat(url, "alpha", max_tokens=50)
    assert reply.status_code == 504 and "timed out" in reply.json()["error"]["message"]


def test_aliases_route_promote_split_and_roll_back(workspace, monkeypatch):
    from tunewright.registry.deploy import DeploymentStore

    deploy = DeploymentStore(workspace.registry)
    state = serve(workspace, monkeypatch)
    with running_server(state) as url:
        assert chat(url, "production").status_code == 404  # points at nothing yet
        deploy.set_alias("staging", "beta")
        deploy.set_alias("production", "alpha")
        state._alias_cache.clear()
        assert chat(url, "production").headers["x-tunewright-served"] == "alpha"
        deploy.promote("staging", "production")
        state._alias_cache.clear()
        assert chat(url, "production").headers["x-tunewright-served"] == "beta"
        deploy.rollback("production")
        deploy.split("production", "beta", 30)
        state._alias_cache.clear()
        served = [chat(url, "production", user=f"user-{i}").headers["x-tunewright-served"] for i in range(40)]
        assert {"alpha", "beta"} == set(served) and 4 <= served.count("beta") <= 20
        sticky = {chat(url, "production", user="user-3").headers["x-tunewright-served"] for _ in range(3)}
        assert len(sticky) == 1  # a named user stays on one side of the test
    changes = [e.payload["change"] for e in workspace.registry.events() if e.action == "alias.changed"]
    assert changes[-5:] == ["set", "set", "promote", "rollback", "split"]


def test_request_logs_are_opt_in_and_redacted(workspace, monkeypatch):
    logs = workspace.root / "logs" / "requests"
    state = serve(workspace, monkeypatch)
    with running_server(state) as url:
        assert chat(url, "alpha").status_code == 200
    assert not logs.exists()
    state = serve(workspace, monkeypatch, log_requests=True)
    with running_server(state) as url:
        body = {"messages": [{"role": "user", "content": "call me at 404-555-0199 or jo@example.com"}]}
        assert post(url, "/v1/chat/completions", {"model": "alpha", "max_tokens": 4, **body}, "user-key").status_code == 200
    [log_file] = logs.glob("*.jsonl")
    record = json.loads(log_file.read_text().splitlines()[-1])
    assert record["messages"][-1]["content"] == "call me at [PHONE] or [EMAIL]"
    assert record["served"] == "alpha" and record["completion_tokens"] <= 4 and "latency_s" in record
    os.remove(log_file)


def test_a_registry_row_pointed_at_other_weights_is_refused_at_every_load(tmp_path, tiny_model_dir, monkeypatch):
    """Database write access alone must not put other weights in front of customers: the folder's
    weights are checked against the sha256 registered with the adapter, every time one is loaded."""
    import sqlalchemy as sa

    from tunewright.errors import TunewrightError
    from tunewright.models.adapters import resolve_ref
    from tunewright.registry.deploy import DeploymentStore

    ws = serve_workspace(tmp_path / "ws", tiny_model_dir, {"alpha": {"seed": 1}, "beta": {"seed": 2}})
    DeploymentStore(ws.registry).set_alias("production", "alpha")
    # The attacker edits the row, not the event chain: alpha's row now names beta's folder.
    with ws.registry.engine.begin() as conn:
        conn.execute(sa.text("UPDATE adapters SET path = :p WHERE name = 'alpha'"),
                     {"p": str(tmp_path / "ws" / "adapters" / "beta")})
    with pytest.raises(TunewrightError, match="not the file registered"):
        resolve_ref("alpha", base_model=str(tiny_model_dir), registry=ws.registry)  # eval, export, governance
    state = serve(ws, monkeypatch, adapters=["beta"])  # startup loads only beta
    with running_server(state) as url:
        refused = chat(url, "production")
        assert refused.status_code == 500 and "not the file registered" in refused.json()["error"]["message"]
        assert post(url, "/admin/adapters", {"adapter": "alpha", "name": "a2"}).status_code == 409
        assert chat(url, "beta").status_code == 200


def test_names_that_requests_reach_other_models_by_cannot_be_taken(workspace, monkeypatch):
    """Loading a folder as 'production' (or the base model's name, or name@N) would shadow the alias
    the release gates guard; such names are refused, and aliases resolve before loaded names."""
    state = serve(workspace, monkeypatch)
    base_name = workspace.recipe.base_model
    with running_server(state) as url:
        for name in ["production", "Staging", "base"]:
            refused = post(url, "/admin/adapters", {"adapter": "beta", "name": name})
            assert refused.status_code == 400 and "reserved name" in refused.json()["error"]["message"], name
        assert post(url, "/admin/adapters", {"adapter": "beta", "name": base_name}).status_code == 400
        assert state.pool.reserved_names >= {"production", "staging", base_name.casefold()}
        versioned = post(url, "/admin/adapters", {"adapter": "beta", "name": "alpha@1"})
        assert versioned.status_code == 400 and "kept for registry versions" in versioned.json()["error"]["message"]
        combined = post(url, "/admin/combine", {"name": "production", "adapters": ["alpha", "beta"]})
        assert combined.status_code == 400
        assert not {"production", "Staging", "base"} & (set(state.pool.models) - {"base"})
        assert state.pool.models["base"].source == state.pool.base.ref  # 'base' is still the base model
        assert chat(url, base_name).headers["x-tunewright-served"] == "base"
