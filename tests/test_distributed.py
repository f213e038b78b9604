"""The same recipe on several processes: 2 gloo workers on the CPU end where one process does,
the run registers once, sharded adapters are gathered before saving, and FSDP / ZeRO-3 launch
configs are written (and refused on a machine without CUDA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunewright.data.api import import_files
from tunewright.errors import TunewrightError
from tunewright.train.api import train
from tunewright.train.launch import LaunchOptions
from tunewright.workspace import Workspace

from helpers import chat_records, init_cli_workspace, run_cli as run, write_jsonl

# Two ranks sum their halves of each step's gradient, then the two sums are added: the same terms
# as one process, in another order. Measured on the tiny model: max abs diff 8.2e-7 on weights
# up to 0.2 after 6 steps (float32).
TOLERANCE = 1e-5


def _workspace(root, tiny_model_dir, data_file) -> Workspace:
    from tunewright.config import Recipe, TrainSpec

    # batch_size 3 over 2 ranks: uneven shares, and the last batch of an epoch (1 row) leaves rank 1
    # without rows; grad_accum 2 checks the step-wide label normaliser.
    # fp32 pinned: the claim is about the distributed sums, and bf16 (what the plan picks on a CPU with
    # bf16 instructions) rounds each product to 8 bits, far above the tolerance on any machine.
    spec = TrainSpec(r=4, alpha=8, learning_rate=1e-2, batch_size=3, grad_accum=2, epochs=2, checkpoint_every=2,
                     max_length=128, precision="fp32")
    workspace = Workspace.init(root, Recipe(name="shop", base_model=str(tiny_model_dir), train=spec))
    import_files(workspace, [data_file], eval_fraction=0.2, seed=1)
    return workspace


def test_two_gloo_processes_train_the_single_process_adapter_and_register_once(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", chat_records(20))
    _, single, single_result = train(_workspace(tmp_path / "single", tiny_model_dir, data))

    workspace = _workspace(tmp_path / "ddp", tiny_model_dir, data)
    seen = []
    run_record, adapter, result = train(workspace, launch=LaunchOptions(mode="ddp", nproc=2),
                                        callbacks=[lambda info: seen.append(info.step)])

    expected = load_file(Path(single.path) / "adapter_model.safetensors")
    got = load_file(Path(adapter.path) / "adapter_model.safetensors")
    assert got.keys() == expected.keys()
    assert max((expected[k] - got[k]).abs().max().item() for k in expected) < TOLERANCE
    assert result.losses == pytest.approx(single_result.losses, abs=1e-5)
    assert result.tokens_seen == single_result.tokens_seen and result.extra["processes"] == 2
    assert seen == list(range(1, single_result.steps + 1))  # rank 0's progress reached our callbacks

    registry = workspace.registry
    assert [r.status for r in registry.list_runs()] == ["completed"] and run_record.metrics["processes"] == 2
    assert [a.id for a in registry.list_adapters()] == [adapter.id]
    actions = [e.action for e in registry.events()]
    assert actions.count("run.started") == 1 and actions.count("adapter.registered") == 1
    checkpoints = Path(workspace.dir("runs")) / f"run-{run_record.id:04d}" / "checkpoints"
    # Only rank 0 wrote checkpoints, with every rank's random state for an exact resume.
    rng = load_file(sorted(checkpoints.glob("step-*"))[-1] / "rng.safetensors")
    assert set(rng) == {"torch", "torch.rank1"}


def test_fsdp2_on_cpu_gathers_the_adapter_a_naive_save_would_get_wrong(tiny_model_dir, tmp_path):
    script = Path(__file__).with_name("dist_fsdp_gather.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(tiny_model_dir), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "SIGABRT" in done.stderr:
        # Once, under heavy load, a gloo worker aborted ("terminate called without an active
        # exception"; not reproduced in 8 loaded runs since). A fault in the code under test repeats,
        # so one fresh launch tells the two apart.
        for stale in tmp_path.glob("rank*.json"):
            stale.unlink()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["sharded"] and rank["local_elements"] * 2 == rank["full_elements"]
        assert "still a sharded DTensor" in rank["refusals"]["naive"]
        assert "only one rank's shard" in rank["refusals"]["local_shards"]
    assert ranks[0]["gathered"] and ranks[0]["same_keys"] and ranks[0]["max_abs_diff"] == 0.0
    assert not ranks[1]["gathered"]  # gathered onto rank 0's CPU only


@pytest.mark.filterwarnings("ignore:Adapter 'default'")  # peft's own warning about the same placeholders
def test_zero3_placeholders_are_refused_and_gathering_fills_them(tiny_model_dir):
    """DeepSpeed is not installed here: its partitioning is simulated the way it leaves parameters
    (a 0-element placeholder per rank, full data only inside GatheredParameters)."""
    from contextlib import contextmanager

    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from tunewright.train.sharded import check_adapter_state, gather_adapter_state

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    reference = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    shapes = {k: tuple(v.shape) for k, v in reference.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    full_data = {id(p): p.data for p in trainable}
    for param in trainable:
        param.ds_id = id(param)
        param.data = torch.empty(0)

    with pytest.raises(TunewrightError, match="has 0 elements"):
        check_adapter_state(get_peft_model_state_dict(model), shapes)

    @contextmanager
    def gathered_parameters(params):
        for param in params:
            param.data = full_data[id(param)]
        yield
        for param in params:
            param.data = torch.empty(0)

    state = gather_adapter_state(model, reference_shapes=shapes, gather=gathered_parameters)
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)
    assert all(p.numel() == 0 for p in trainable)  # partitioned again afterwards
    with pytest.raises(TunewrightError, match="shape"):
        check_adapter_state({**state, next(iter(state)): torch.zeros(1, 1)}, shapes)


@pytest.fixture
def cli_workspace(tmp_path, tiny_model_dir, capsys):
    ws = init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys)
    data = write_jsonl(tmp_path / "rows.jsonl", chat_records(12))
    assert run(["-w", ws, "data", "import", data], capsys)[0] == 0
    return ws


def test_fsdp_and_zero3_need_cuda_but_dry_run_writes_the_launch(cli_workspace, capsys):
    from accelerate.commands.config.config_args import load_config_from_file

    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without CUDA")
    for mode in ("fsdp", "zero3"):
        code, _, err = run(["-w", cli_workspace, "train", "--distributed", mode, "--nproc", "2"], capsys)
        assert code == 2 and "CUDA GPUs" in err and "--dry-run" in err

    code, out, err = run(["-w", cli_workspace, "train", "--distributed", "fsdp", "--nproc", "4", "--dry-run"], capsys)
    assert code == 0, err
    folder = cli_workspace / "runs" / "dry-run"
    config = load_config_from_file(str(folder / "accelerate_config.yaml"))  # accelerate's own parser accepts it
    assert config.distributed_type == "FSDP" and config.num_processes == 4
    assert config.fsdp_config["fsdp_use_orig_params"] is True
    assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert "accelerate.commands.launch --config_file" in out and "tunewright.train.worker" in out

    args = ["--distributed", "zero3", "--nproc", "8", "--num-machines", "2", "--main-process-ip", "10.0.0.1", "--dry-run"]
    code, out, err = run(["-w", cli_workspace, "train", *args], capsys)
    assert code == 0, err
    deepspeed = json.loads((folder / "deepspeed_config.json").read_text())
    assert deepspeed["zero_optimization"]["stage"] == 3
    assert deepspeed["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    config = load_config_from_file(str(folder / "accelerate_config.yaml"))
    assert config.distributed_type == "DEEPSPEED" and config.num_processes == 16 and config.num_machines == 2
    assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"
    assert "--machine_rank 0" in out and "machine 1:" in out and "--main_process_ip 10.0.0.1" in out
    assert Workspace.open(cli_workspace).registry.list_runs() == []  # a dry run registers nothing


@pytest.mark.parametrize("options, message", [
    (LaunchOptions(nproc=2), "need --distributed"),
    (LaunchOptions(mode="mpi"), "unknown --distributed"),
    (LaunchOptions(mode="ddp", num_machines=2), "--main-process-ip"),
    (LaunchOptions(mode="ddp", num_machines=2, machine_rank=1, main_process_ip="h"), "registered once, on machine 0"),
])
def test_launch_options_are_checked_before_anything_runs(options, message):
    with pytest.raises(TunewrightError, match=message):
        options.validate()


def test_dry_run_launches_workers_on_the_replay_rows_too(cli_workspace, monkeypatch):
    from tunewright.config import ReplaySpec
    from tunewright.train.api import plan_launch

    monkeypatch.setattr("tunewright.train.replay._answer", lambda base, prompts, n, **kw: [
        {"id": p.id, "prompt": p.prompt, "answer": f"general answer {i}", "finished": True} for i, p in enumerate(prompts)])
    workspace = Workspace.open(cli_workspace)
    workspace.recipe = workspace.recipe.model_copy(update={"train": workspace.recipe.train.model_copy(
        update={"replay": ReplaySpec(rows=5)})})
    plan = plan_launch(workspace, launch=LaunchOptions(mode="ddp", nproc=2, dry_run=True))
    job = json.loads(plan.job_file.read_text())
    rows = [json.loads(line) for line in Path(job["dataset_path"], "train.jsonl").read_text().splitlines()]
    replayed = [r for r in rows if r.get("meta", {}).get("replay")]
    from tunewright.data.api import load_split

    assert len(replayed) == 5 and len(rows) - 5 == len(load_split(workspace, None, "train")[1])
    assert {r["messages"][-1]["content"] for r in replayed} == {f"general answer {i}" for i in range(5)}
