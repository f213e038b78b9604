"""Training through the workspace API: registry records, resume after a crash, bit-identical weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tunewright.data.api import import_files
from tunewright.train.api import train
from tunewright.workspace import Workspace

from helpers import chat_records, write_jsonl


def _workspace(root, tiny_model_dir, data_file) -> Workspace:
    from tunewright.config import Recipe, TrainSpec

    recipe = Recipe(name="shop", base_model=str(tiny_model_dir),
                    train=TrainSpec(r=4, alpha=8, learning_rate=1e-2, batch_size=4, epochs=2, checkpoint_every=2, max_length=128))
    workspace = Workspace.init(root, recipe)
    import_files(workspace, [data_file], eval_fraction=0.2, seed=1)
    return workspace


def test_resume_through_the_api_matches_a_clean_run(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", chat_records(20))
    clean_ws = _workspace(tmp_path / "clean", tiny_model_dir, data)
    _, clean_adapter, _ = train(clean_ws)

    crash_ws = _workspace(tmp_path / "crash", tiny_model_dir, data)

    def crash(info):
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(crash_ws, callbacks=[crash])
    [failed] = crash_ws.registry.list_runs()
    assert failed.status == "failed" and "KeyboardInterrupt" in failed.error
    assert crash_ws.registry.list_adapters() == []

    run, adapter, result = train(crash_ws, resume=True)
    assert run.id == failed.id and run.status == "completed" and result.resumed_from_step == 2
    assert adapter.run_id == run.id and adapter.version == 1
    expected = load_file(f"{clean_adapter.path}/adapter_model.safetensors")
    got = load_file(f"{adapter.path}/adapter_model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert adapter.weights_sha256 == clean_adapter.weights_sha256
    actions = [e.action for e in crash_ws.registry.events()]
    assert actions.count("run.resumed") == 1 and actions[-1] == "adapter.registered"


def test_run_records_config_hardware_versions_and_lineage(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", chat_records(12))
    workspace = _workspace(tmp_path / "ws", tiny_model_dir, data)
    run, adapter, _ = train(workspace, overrides={"max_steps": 2})
    assert run.config["train"]["max_steps"] == 2 and run.seed == 0
    assert run.hardware["cpu_count"] >= 1 and "transformers" in run.library_versions
    assert run.metrics["steps"] == 2 and run.metrics["shared_prefix_tokens"] > 0
    assert adapter.base_model_sha256 == run.base_model_sha256
    edges = workspace.registry.lineage("adapter", str(adapter.id))
    assert any(e["parent_kind"] == "run" and e["parent_id"] == str(run.id) for e in edges)
