"""The run planner: hardware detection, memory and time models, the recommendation train follows, cost."""

from __future__ import annotations

import json

import pytest

from tunewright.config import Recipe, TrainSpec
from tunewright.data.api import import_files
from tunewright.errors import TunewrightError
from tunewright.models import prepare_base_model
from tunewright.plan import Hardware, load_prices, parse_cpuinfo, plan_training, resolve_train_spec
from tunewright.plan.cost import cost_table
from tunewright.plan.hardware import detect_hardware, fastest_dtype, measure_matmul
from tunewright.plan.memory import MicroBatch, ModelShape, activation_bytes, model_shape, predict_peak
from tunewright.plan.speed import CPU_EFFICIENCY, micro_batch_flops
from tunewright.workspace import Workspace

from helpers import chat_records, qa_rows, write_jsonl

GIB = 2**30

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_bf16 amx_tile amx_bf16 ht

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_bf16 amx_tile amx_bf16 ht

processor\t: 2
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_bf16 amx_tile amx_bf16 ht
"""

ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimdhp bf16 i8mm sve\nCPU part\t: 0xd40\n"

SMOL_SHAPE = ModelShape(n_params=134_515_008, n_layers=30, hidden=576, intermediate=1536, n_heads=9, n_kv_heads=3,
                        head_dim=64, vocab=49152, tied=True)


def fake_hardware(rates: dict[str, float], available: int = 16 * GIB) -> Hardware:
    return Hardware(cpu_model="test CPU", physical_cores=2, logical_cores=2, flags=["avx2"], ram_total=2 * available,
                    ram_available=available, device="cpu", threads=2, rates=dict(rates))


FAST_FP32 = {"fp32": 100e9, "bf16": 0.5e9}


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dir):
    return prepare_base_model(str(tiny_model_dir))


def _rows(n: int = 24):
    return qa_rows(n)


# --- hardware ---------------------------------------------------------------------------------------------------


def test_cpuinfo_parsing_finds_model_flags_and_physical_cores():
    model, flags, physical = parse_cpuinfo(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"} <= set(flags)
    assert "fpu" not in flags and "ht" not in flags  # only the flags that decide matmul speed
    assert physical == 2  # three logical CPUs, two (physical id, core id) pairs

    model, flags, physical = parse_cpuinfo(ARM_CPUINFO)
    assert {"asimd", "bf16", "i8mm", "sve"} <= set(flags) and physical is None
    assert parse_cpuinfo("") == ("", [], None)


def test_detected_hardware_is_sane():
    hw = detect_hardware(measure=False)
    assert hw.cpu_model and hw.logical_cores >= 1 and hw.threads >= 1
    assert hw.physical_cores is None or 1 <= hw.physical_cores <= hw.logical_cores
    assert 0 < hw.ram_available <= hw.ram_total
    assert hw.device in ("cpu", "cuda") and (hw.device == "cuda") == bool(hw.gpus)
    assert hw.memory_available == (hw.gpus[0].free_bytes if hw.gpus else hw.ram_available)
    assert json.dumps(hw.to_dict())


def test_cuda_gpus_are_described_from_torch(monkeypatch):
    import contextlib
    import types

    import torch

    props = types.SimpleNamespace(name="NVIDIA H200", total_memory=141 * GIB, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (100 * GIB, 141 * GIB))
    hw = detect_hardware(measure=False)
    assert hw.device == "cuda" and hw.gpus[0].capability == "9.0" and hw.gpus[0].bf16
    assert (hw.memory_total, hw.memory_available) == (141 * GIB, 100 * GIB)  # the budget uses what is free


def test_matmul_rate_is_measured_once_per_process():
    rate = measure_matmul("fp32", budget_s=0.05)
    assert rate > 1e6  # any machine that runs torch multiplies faster than a MFLOP/s
    assert measure_matmul("fp32", budget_s=0.05) == rate  # cached: train and plan pay for it once


def test_fastest_dtype_follows_the_measurement():
    assert fastest_dtype(fake_hardware({"fp32": 111e9, "bf16": 0.3e9})) == "fp32"
    assert fastest_dtype(fake_hardware({"fp32": 100e9, "bf16": 400e9})) == "bf16"
    gpu = fake_hardware({"fp32": 50e12, "bf16": 700e12, "fp16": 720e12})
    gpu.device = "cuda"
    assert fastest_dtype(gpu) == "bf16"  # a near tie goes to bf16, which needs no loss scaling


# --- memory -----------------------------------------------------------------------------------------------------


def _peak(batch: MicroBatch, checkpointing: bool = False):
    return predict_peak(SMOL_SHAPE, [batch], trainable=4_884_480, lora_r=16, lora_linears=7,
                        checkpointing=checkpointing, dtype="fp32", method="lora", device="cpu")


def test_memory_grows_with_batch_and_length_and_checkpointing_lowers_it():
    small = _peak(MicroBatch(rows=2, width=64, labelled=40))
    wider = _peak(MicroBatch(rows=2, width=128, labelled=40))
    bigger = _peak(MicroBatch(rows=8, width=64, labelled=160))
    assert small.total < wider.total and small.total < bigger.total
    assert small.weights == SMOL_SHAPE.n_params * 4 == bigger.weights  # fp32 weights, independent of the batch
    checkpointed = _peak(MicroBatch(rows=8, width=64, labelled=160), checkpointing=True)
    assert checkpointed.activations < bigger.activations / 5 and checkpointed.total < bigger.total
    shared = activation_bytes(SMOL_SHAPE, MicroBatch(rows=8, width=64, labelled=0, prefix=24), lora_r=16,
                              lora_linears=7, checkpointing=False, dtype_bytes=4)
    assert shared < bigger.activations  # the shared prompt runs once, not once per row


def test_model_shape_reads_config_and_counts_parameters(tiny_model_dir):
    shape = model_shape(tiny_model_dir)
    assert (shape.n_layers, shape.hidden, shape.intermediate, shape.n_heads, shape.n_kv_heads) == (2, 32, 64, 4, 2)
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert shape.n_params == sum(p.numel() for p in model.parameters())


def test_predicted_peak_is_within_30_percent_of_a_measured_run(tiny_base):
    """--calibrate trains a few real steps in a child process and measures its peak RSS."""
    rows = _rows(32)
    spec = TrainSpec(r=4, alpha=8, batch_size=8, max_length=128)
    plan = plan_training(tiny_base, rows, spec, hardware=fake_hardware(FAST_FP32), calibrate=True)
    cal = plan.calibration
    assert cal["steps"] >= 3 and cal["rows"] == min(32, 8 * cal["steps"]) and cal["measured_seconds"] > 0
    predicted, measured = cal["predicted_peak_bytes"], cal["measured_peak_bytes"]
    assert abs(predicted - measured) <= 0.3 * measured, (predicted / 2**20, measured / 2**20)
    # The efficiency is re-fitted from the measured steps: the prediction for those steps now matches them.
    assert plan.time.efficiency == pytest.approx(CPU_EFFICIENCY * cal["predicted_seconds"] / cal["measured_seconds"])


# --- time -------------------------------------------------------------------------------------------------------


def test_flops_follow_the_lora_formula():
    mb = MicroBatch(rows=1, width=100, labelled=10)
    flops = micro_batch_flops(SMOL_SHAPE, mb, adapter_params=0, checkpointing=False)
    frozen_forward_and_input_grads = 4 * SMOL_SHAPE.linear_params * 100
    assert flops == pytest.approx(frozen_forward_and_input_grads + 12 * 100 * 576 * 30 * 100 + 4 * 49152 * 576 * 10)
    with_adapter = micro_batch_flops(SMOL_SHAPE, mb, adapter_params=1000, checkpointing=False)
    assert with_adapter - flops == 6 * 1000 * 100
    assert micro_batch_flops(SMOL_SHAPE, mb, adapter_params=0, checkpointing=True) > flops * 1.4  # forward again


def test_time_prediction_scales_with_epochs_and_rate(tiny_base):
    rows = _rows(24)
    one = plan_training(tiny_base, rows, TrainSpec(epochs=1, batch_size=4), hardware=fake_hardware(FAST_FP32))
    three = plan_training(tiny_base, rows, TrainSpec(epochs=3, batch_size=4), hardware=fake_hardware(FAST_FP32))
    assert three.time.steps == 3 * one.time.steps == 18
    assert three.time.flops == pytest.approx(3 * one.time.flops, rel=0.05)
    slow = plan_training(tiny_base, rows, TrainSpec(epochs=1, batch_size=4),
                         hardware=fake_hardware({"fp32": 1e9, "bf16": 0.1e9}))
    assert slow.time.seconds - slow.time.overhead_s == pytest.approx(
        100 * (one.time.seconds - one.time.overhead_s))


# --- recommendation and resolve_train_spec --------------------------------------------------------------------


def test_recommends_fp32_when_bf16_measures_far_slower(tiny_base):
    plan = plan_training(tiny_base, _rows(), TrainSpec(), hardware=fake_hardware({"fp32": 111e9, "bf16": 0.3e9}))
    assert plan.recommendation.precision == "fp32"
    assert resolve_train_spec(TrainSpec(), plan).precision == "fp32"
    amx = plan_training(tiny_base, _rows(), TrainSpec(), hardware=fake_hardware({"fp32": 100e9, "bf16": 400e9}))
    assert amx.recommendation.precision == "bf16"


def test_explicit_bf16_on_a_cpu_without_fast_bf16_is_refused_with_the_ratio(tiny_base):
    spec = TrainSpec(precision="bf16")
    plan = plan_training(tiny_base, _rows(), spec, hardware=fake_hardware({"fp32": 111e9, "bf16": 0.3e9}))
    with pytest.raises(TunewrightError) as err:
        resolve_train_spec(spec, plan)
    assert err.value.field == "train.precision" and "0.003x" in str(err.value) and "111.0 GFLOP/s" in str(err.value)


def _memory(plan, batch: int, checkpointing: bool) -> int:
    planner = plan.planner
    return planner.memory(planner.steps(batch, 1, checkpointing), checkpointing, "fp32", "lora").total


def test_checkpointing_only_when_the_batch_would_not_fit_otherwise(tiny_base):
    rows, spec = _rows(), TrainSpec(batch_size=8, r=4, alpha=8)
    roomy = plan_training(tiny_base, rows, spec, hardware=fake_hardware(FAST_FP32))
    assert roomy.recommendation.gradient_checkpointing is False and roomy.recommendation.batch_size == 8
    with_ckpt, without = _memory(roomy, 8, True), _memory(roomy, 8, False)
    assert with_ckpt < without
    tight = plan_training(tiny_base, rows, spec, hardware=fake_hardware(FAST_FP32), budget=with_ckpt)
    rec = tight.recommendation
    assert (rec.batch_size, rec.gradient_checkpointing, rec.fits) == (8, True, True)
    assert any("checkpointing" in reason for reason in rec.reasons)
    resolved = resolve_train_spec(spec, tight)
    assert resolved.gradient_checkpointing is True and resolved.batch_size == 8


def test_unset_batch_shrinks_to_fit_with_accumulation_explicit_batch_is_refused(tiny_base):
    rows = _rows()
    probe = plan_training(tiny_base, rows, TrainSpec(), hardware=fake_hardware(FAST_FP32))
    budget = _memory(probe, 2, True)  # room for batch 2 with checkpointing only
    plan = plan_training(tiny_base, rows, TrainSpec(), hardware=fake_hardware(FAST_FP32), budget=budget)
    rec = plan.recommendation
    assert rec.fits and rec.batch_size == 2 and rec.grad_accum == 4  # 2 x 4 keeps the recipe's 8 rows per step
    resolved = resolve_train_spec(TrainSpec(), plan)
    assert (resolved.batch_size, resolved.grad_accum) == (2, 4)

    explicit = TrainSpec(batch_size=8)
    plan = plan_training(tiny_base, rows, explicit, hardware=fake_hardware(FAST_FP32), budget=budget)
    assert not plan.recommendation.fits
    with pytest.raises(TunewrightError) as err:
        resolve_train_spec(explicit, plan)
    message = str(err.value)
    assert err.value.field == "train.batch_size" and "predicted peak" in message and "GiB" in message
    assert f"{budget / GIB:.2f} GiB available" in message


def test_explicit_recipe_fields_win_over_the_plan(tiny_base):
    spec = TrainSpec(batch_size=4, grad_accum=3, gradient_checkpointing=True, precision="fp32")
    plan = plan_training(tiny_base, _rows(), spec, hardware=fake_hardware(FAST_FP32))
    resolved = resolve_train_spec(spec, plan)
    assert (resolved.batch_size, resolved.grad_accum, resolved.gradient_checkpointing, resolved.precision) == (
        4, 3, True, "fp32")
    unset = TrainSpec()
    resolved = resolve_train_spec(unset, plan_training(tiny_base, _rows(), unset, hardware=fake_hardware(FAST_FP32)))
    assert resolved.gradient_checkpointing is False and resolved.precision == "fp32" and resolved.batch_size == 8


# --- cost -------------------------------------------------------------------------------------------------------

PRICES = """\
as_of: "2026-11"
gpu_efficiency: 0.5
gpu_step_overhead_s: 0
on_premise:
  hardware_price: 8760
  lifetime_years: 1
  utilisation: 1
  watts: 1000
  electricity_per_kwh: 0.5
cloud:
  - provider: Test
    instance: one
    gpu: T1
    gpu_memory_gib: 1
    bf16_tflops: 1
    price_per_hour: 3
  - provider: Test
    instance: big
    gpu: T2
    gpus: 8
    gpu_memory_gib: 80
    bf16_tflops: 2
    price_per_hour: 10
"""


def test_cost_math_on_a_small_price_table(tmp_path):
    table = load_prices(write_text(tmp_path / "prices.yaml", PRICES))
    assert table.on_premise.cost_per_hour == pytest.approx(1.0 + 0.5)  # 8760 over 8760 h, plus 1 kW at 0.5
    rows = cost_table(table, local_seconds=7200, local_hardware="cpu", flops=3.6e15, steps=10,
                      gpu_memory_needed=2 * GIB)
    local, *cloud = rows
    assert (local.hours, local.cost) == (pytest.approx(2.0), pytest.approx(3.0))
    by_name = {row.where: row for row in cloud}
    # 3.6e15 FLOP at 1 TFLOP/s x 0.5 efficiency = 7200 s = 2 h
    assert by_name["Test one"].hours == pytest.approx(2.0) and by_name["Test one"].cost == pytest.approx(6.0)
    assert not by_name["Test one"].fits and "does not fit" in by_name["Test one"].note  # 2 GiB > 1 GiB
    assert by_name["Test big"].hours == pytest.approx(1.0) and by_name["Test big"].cost == pytest.approx(10.0)
    assert "bills 8 GPUs" in by_name["Test big"].note
    assert cloud[0].where == "Test big"  # what fits sorts before what does not


def test_packaged_prices_load_and_are_dated():
    from tunewright.plan.cost import default_prices_path

    table = load_prices(default_prices_path())
    assert table.as_of == "2026-11" and len(table.cloud) >= 6 and table.on_premise.cost_per_hour > 0
    assert "check before relying" in default_prices_path().read_text().lower()


def test_bad_price_file_names_file_field_and_line(tmp_path):
    bad = write_text(tmp_path / "mine.yaml", PRICES.replace("price_per_hour: 10", "price_per_hour: ten"))
    with pytest.raises(TunewrightError) as err:
        load_prices(bad)
    assert err.value.field == "cloud.1.price_per_hour" and err.value.file == str(bad)
    assert err.value.line == PRICES.splitlines().index("    price_per_hour: 10") + 1
    missing = write_text(tmp_path / "missing.yaml", PRICES.replace("  watts: 1000\n", ""))
    with pytest.raises(TunewrightError, match="on_premise.watts"):
        load_prices(missing)
    with pytest.raises(TunewrightError, match="price file not found"):
        load_prices(tmp_path / "nope.yaml")


def write_text(path, text):
    path.write_text(text)
    return path


# --- train follows the plan; the CLI prints it ------------------------------------------------------------------


def _workspace(root, tiny_model_dir, data_file, **train) -> Workspace:
    recipe = Recipe(name="shop", base_model=str(tiny_model_dir),
                    train=TrainSpec(r=4, alpha=8, learning_rate=1e-2, max_length=128, **train))
    workspace = Workspace.init(root, recipe)
    import_files(workspace, [data_file], eval_fraction=0.2, seed=1)
    return workspace


def test_train_records_the_plan_and_the_measured_peak(tiny_model_dir, tmp_path):
    from tunewright.train.api import train

    workspace = _workspace(tmp_path / "ws", tiny_model_dir, write_jsonl(tmp_path / "rows.jsonl", chat_records(12)))
    run, _, _ = train(workspace, overrides={"max_steps": 2})
    assert run.config["train"]["precision"] in ("fp32", "bf16") and run.config["train"]["gradient_checkpointing"] is False
    plan = run.config["plan"]
    assert plan["predicted_peak_bytes"] > plan["memory"]["weights"] > 0 and plan["steps"] == 2
    assert run.metrics["peak_rss_bytes"] > 0 and run.metrics["predicted_peak_bytes"] == plan["predicted_peak_bytes"]


def test_cli_plan_prints_every_section(tiny_model_dir, tmp_path, capsys):
    from tunewright.cli.main import main

    ws = _workspace(tmp_path / "ws", tiny_model_dir, write_jsonl(tmp_path / "rows.jsonl", chat_records(12)), batch_size=4)
    main(["--workspace", str(ws.root), "plan"])
    out = capsys.readouterr().out
    for section in ("hardware", "measured matmul throughput", "recommendation", "prediction", "peak memory", "cost",
                    "train.batch_size", "AWS g6.xlarge", "this machine"):
        assert section in out, section
    write_text(ws.root / "prices.yaml", PRICES)  # the workspace's own table wins over the packaged one
    main(["--workspace", str(ws.root), "plan", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [row["where"] for row in data["costs"]][1:] == ["Test one", "Test big"]
    assert data["recommendation"]["batch_size"] == 4 and data["recipe_set"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--workspace", str(ws.root), "plan", "--prices", str(tmp_path / "absent.yaml")])
    assert exit_info.value.code == 2 and "price file not found" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_trainable_parameter_count_matches_the_wrapped_model(tiny_base, method):
    from tunewright.plan.memory import trainable_params
    from tunewright.methods import get_method

    spec = TrainSpec(method=method, r=4)
    counted, _, _ = trainable_params(tiny_base.folder, model_shape(tiny_base.folder), spec)
    wrapper = get_method(method)
    model = wrapper.wrap(wrapper.load_base(tiny_base, spec), spec)
    assert counted == sum(p.numel() for p in model.parameters() if p.requires_grad)


def _config_folder(tmp_path, family: str):
    """A config.json of a tiny model of ``family`` (no weights: the planner reads shapes only)."""
    from transformers import Gemma3Config, LlamaConfig, Phi3Config

    shape = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256)
    if family == "phi3":
        config = Phi3Config(**shape, pad_token_id=0)
    elif family == "gemma3":  # multimodal: the language model's shape nests under text_config
        config = Gemma3Config(text_config={**shape, "head_dim": 8, "model_type": "gemma3_text"},
                              vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                             "num_attention_heads": 2, "image_size": 28, "patch_size": 14})
    else:
        config = LlamaConfig(**shape)
    folder = tmp_path / family
    config.save_pretrained(folder)
    return folder, config


@pytest.mark.parametrize("family", ["llama", "phi3", "gemma3"])
def test_closed_form_lora_count_and_shape_follow_the_family_layers(tmp_path, family):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunewright.plan.memory import lora_params

    folder, config = _config_folder(tmp_path, family)
    shape = model_shape(folder)
    assert (shape.n_layers, shape.hidden, shape.n_heads, shape.n_kv_heads) == (3, 32, 4, 2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if family == "phi3":  # fused projections: Llama's names would count nothing
        assert {"self_attn.qkv_proj", "mlp.gate_up_proj"} <= set(shape.linears())
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    peft_count = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    closed, linears = lora_params(shape, 4, "all-linear")
    if family == "gemma3":  # peft's all-linear also adapts the vision tower's linears; the planner counts the decoder's
        language = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "language_model" in n)
        assert closed == language
    else:
        assert closed == peft_count
    assert linears == len(shape.linears())
