"""Training throughput on the demo data: Tunewright's loop vs Trainer + peft vs TRL's SFTTrainer.

One script, one run. Every contender trains the same LoRA (r=16, alpha=32, all linear layers) on
SmolLM2-135M-Instruct (loaded with ``tunewright.models``) over the same rows: the Peachtree demo
dataset, built from ``examples/peachtree`` into a temporary workspace with the Tunewright API and read
back with ``load_split``. Every contender sees exactly the same token ids and the same labels (loss on
assistant tokens only, as ``tunewright.data.tokenize.encode_chat`` marks them), batch 8, fp32 unless
the contender's own defaults say otherwise, the same learning rate and seed.

Contenders, each in its own subprocess so their peak memory does not mix:

  a            transformers.Trainer + peft at their defaults (fp32, no gradient checkpointing),
               dynamic padding with Tunewright's collator (same labels).
  b-defaults   TRL SFTTrainer at its defaults: bf16=True, gradient_checkpointing=True. A step takes
               minutes on a CPU without bf16, so it runs only --trl-default-steps steps (2) and is
               extrapolated like the others.
  b-fp32       TRL SFTTrainer with bf16=False (gradient checkpointing still on, its default).
  b-fp32-nogc  TRL SFTTrainer with bf16=False and gradient_checkpointing=False.
  c            Tunewright's ``train_adapter`` with the demo recipe's train section, in the precision
               ``tunewright train`` plans (the measured-fastest: bf16 on CPUs with AVX512-BF16 or AMX).
  c-fp32       the same in fp32: the speed-up bf16 buys, in the same run.

TRL is fed the pre-tokenized rows (``input_ids`` + ``labels``), so it trains on identical tokens;
everything else (collator, fused LM head, loss, optimizer, scheduler) is its own default.

Definitions (one for all contenders):

  useful token   a non-padding token of a training row, i.e. every token of the row: the system
                 prompt, the question and the answer. All of them are context for the loss-bearing
                 (assistant) positions. Padding, and prefix tokens a contender skips recomputing,
                 are not counted twice or extra: a row of L tokens is L useful tokens, whoever runs it.
  tokens/s       useful tokens trained / seconds from the start of the first step to the end of the
                 last one (model loading and dataset preparation excluded; the first step included).
  demo wall      the time to the demo's full run (its epochs over all training rows):
                 demo tokens (rows' tokens x epochs) / tokens/s. Every contender runs the same number
                 of optimizer steps (--steps, default one demo epoch) and is scaled to the demo's
                 epochs this way; TRL at defaults runs fewer steps (see above) and is scaled the same.
  peak RSS       ru_maxrss of the contender's own process (os.wait4), model loading included.
  tok/CPU-s      useful tokens per CPU second of the contender's process over the same window, times
                 the thread count: what tokens/s would be if the cores were its alone. Printed because
                 a shared machine (other jobs running) slows wall time. The "others" column is how
                 many cores other processes kept busy, on average, while the contender ran (from
                 /proc/stat minus the contender's own CPU time): 0 on a quiet machine.

FLOP model (the ceiling). Per row of L tokens with n labelled next-token positions, for a LoRA step
of this model:

  forward  = 2*N_lin*L          frozen linear layers (q,k,v,o,gate,up,down of all layers)
           + 2*N_lora*L         LoRA A and B
           + 4*layers*d_attn*L(L+1)/2   causal attention: Q.K^T and P.V over the keys each query sees
           + 2*d_model*vocab*n  output projection at labelled positions only (the least work needed;
                                Tunewright's loop does exactly this, the baselines project every position)
  backward = 2*N_lin*L          activation gradients through the frozen weights (no weight gradients)
           + 4*N_lora*L         LoRA weight gradients + activation gradients through LoRA
           + 2 x attention      dQ, dK, dV
           + 2*d_model*vocab*n  gradient through the (frozen, tied) output projection

Norms, rotary, SiLU, softmax and the optimizer are elementwise and left out. The ceiling is this
machine's fp32 matmul rate (1024x1024 matmuls, all threads, about 2 s) divided by the FLOPs per useful
token averaged over the demo rows; "% of ceiling" is useful FLOPs per second (from the rows a
contender actually trained) over that rate. Tunewright's shared-prefix pass runs the system prompt once
per batch, so its *executed* FLOPs are lower than its useful FLOPs; both are reported for it.

Ablations (--ablations) of our loop: shared prefix off; ``torch.compile`` of every decoder layer's
MLP (through a benchmark-only method registered with ``register_method``, no change to src/; whole
layers recompile per layer on the key/value cache and dynamo gives up after 8); and a
small loop that mirrors ``train_adapter`` (same plan, optimizer, schedule, clipping, loss) without
fused LoRA, and differs only in how a batch is laid out:
  mini-grouped        the length-grouped padded batch (the loop's layout, prefix sharing off)
  mini-packed         the batch's rows concatenated into one sequence, position ids restarting per
                      row, attention block-diagonal (transformers builds that mask from the position ids)
  mini-packed-prefix  the loop's own packing (tunewright.train.packing): the shared prefix once, then
                      every row's remainder, with a 4D boolean mask that lets each see the prefix and itself
Before timing, the script asserts that packed, packed-prefix, padded and shared-prefix layouts give
the same loss and the same LoRA gradients on a real batch.

Usage:
  python benchmarks/train_throughput.py [--steps N] [--only a,b,c] [--skip-trl-defaults]
                                        [--trl-default-steps 2] [--ablations] [--merge]
Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train_throughput.json"
IGNORE_INDEX = -100

MAIN = {
    "a": [("a", "Trainer + peft (defaults)")],
    "b": [
        ("b-defaults", "TRL SFTTrainer (defaults: bf16, grad ckpt)"),
        ("b-fp32", "TRL SFTTrainer bf16=False"),
        ("b-fp32-nogc", "TRL SFTTrainer bf16=False, no grad ckpt"),
    ],
    "c": [("c", "Tunewright train_adapter (planned precision)"), ("c-fp32", "Tunewright train_adapter, fp32")],
}
ABLATIONS = [
    ("c-noprefix", "train_adapter, share_prefix=False"),
    ("c-nopack", "train_adapter, packing=off (padded, prefix cache)"),
    ("c-nofuse", "train_adapter, fuse_lora=False (PEFT's own LoRA forward)"),
    ("c-compile", "train_adapter + torch.compile (layer MLPs)"),
    ("mini-grouped", "mini loop: length-grouped padded batch"),
    ("mini-packed", "mini loop: packed, block-diagonal"),
    ("mini-packed-prefix", "mini loop: packed + shared prefix (4D mask)"),
]
LABELS = dict([item for group in MAIN.values() for item in group] + ABLATIONS)


# --------------------------------------------------------------------------------------------
# Shared helpers (used by the parent and the children)
# --------------------------------------------------------------------------------------------

def build_workspace(folder: Path):
    """The demo's training split, built the way `tunewright init --from examples/peachtree && data build` does."""
    from tunewright.synth.build import build_dataset
    from tunewright.workspace import init_workspace

    workspace = init_workspace(folder, template=ROOT / "examples" / "peachtree")
    build_dataset(workspace)
    return workspace


def load_demo(workspace_dir: Path):
    from tunewright.data.api import load_split
    from tunewright.models import load_tokenizer, prepare_base_model
    from tunewright.data.tokenize import encode_chat
    from tunewright.workspace import Workspace

    workspace = Workspace.open(workspace_dir)
    _record, rows = load_split(workspace, None, "train")
    spec = workspace.recipe.train
    base = prepare_base_model(workspace.recipe.base_model)
    tokenizer = load_tokenizer(base)
    encoded = [encode_chat(tokenizer, [m.model_dump() for m in r.messages], spec.max_length) for r in rows]
    encoded = [e for e in encoded if e.n_trainable > 0]
    return workspace, rows, spec, base, tokenizer, encoded


def label_positions(labels) -> int:
    """Labelled next-token positions of a row: labels[1:] that are not ignored."""
    return sum(1 for label in list(labels)[1:] if label != IGNORE_INDEX)


class FlopModel:
    """FLOPs of one LoRA training step, per row; see the module docstring for the formula."""

    def __init__(self, config: dict, r: int):
        self.layers = config["num_hidden_layers"]
        self.d_model = d = config["hidden_size"]
        self.vocab = config["vocab_size"]
        heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
        head_dim = config.get("head_dim") or d // heads
        inter = config["intermediate_size"]
        self.d_attn = heads * head_dim
        shapes = [(d, heads * head_dim), (d, kv_heads * head_dim), (d, kv_heads * head_dim),
                  (heads * head_dim, d), (d, inter), (d, inter), (inter, d)]  # q k v o gate up down
        self.n_lin = self.layers * sum(i * o for i, o in shapes)
        self.n_lora = self.layers * sum(r * (i + o) for i, o in shapes)

    def attention(self, n_queries: int, keys_before: int = 0) -> float:
        """Forward FLOPs of causal attention for n_queries tokens that also see keys_before earlier keys."""
        pairs = n_queries * keys_before + n_queries * (n_queries + 1) / 2
        return 4 * self.layers * self.d_attn * pairs

    def tokens(self, n: int) -> float:
        """Forward + backward FLOPs of the linear and LoRA layers for n tokens."""
        return (2 + 2) * self.n_lin * n + (2 + 4) * self.n_lora * n

    def head(self, n_labels: int) -> float:
        return 2 * 2 * self.d_model * self.vocab * n_labels

    def row(self, length: int, n_labels: int) -> float:
        """Useful FLOPs of a row: computed on its own, no padding, output projection at labels only."""
        return self.tokens(length) + 3 * self.attention(length) + self.head(n_labels)

    def batch_executed(self, lengths: list[int], n_labels: int, prefix: int) -> float:
        """What Tunewright's loop executes for one padded batch, with the prefix run once if shared."""
        width = max(lengths)
        if prefix and len(lengths) > 1:
            rest = width - prefix
            return (self.tokens(prefix) + 3 * self.attention(prefix)
                    + len(lengths) * (self.tokens(rest) + 3 * self.attention(rest, prefix)) + self.head(n_labels))
        return len(lengths) * (self.tokens(width) + 3 * self.attention(width)) + self.head(n_labels)


def matmul_rate(n: int = 1024, seconds: float = 2.0, shape: tuple[int, int, int] | None = None,
                dtype: str = "fp32") -> float:
    """Matmul FLOP/s on all threads in ``dtype``: square n x n, or an (m, k) @ (k, n) shape."""
    import torch

    m, k, n2 = shape or (n, n, n)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(m, k).to(torch_dtype), torch.randn(k, n2).to(torch_dtype)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        a @ b
        count += 1
    return 2 * m * k * n2 * count / elapsed


# --------------------------------------------------------------------------------------------
# Children: one contender each
# --------------------------------------------------------------------------------------------

class Recorder:
    """Per-step timestamps and the rows each step trained on (lengths and labelled positions)."""

    def __init__(self):
        self.t0 = None
        self.cpu0 = None
        self.step_ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.batches: list[list[tuple[int, int]]] = []

    def start(self):
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def batch(self, attention_mask, labels):
        rows = []
        for mask_row, label_row in zip(attention_mask.tolist(), labels.tolist()):
            rows.append((int(sum(mask_row)), label_positions(label_row[: int(sum(mask_row))])))
        self.batches.append(rows)

    def step_end(self):
        self.step_ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    def result(self, **extra) -> dict:
        steps = len(self.step_ends)
        batches = self.batches[:steps]
        durations = [b - a for a, b in zip([self.t0] + self.step_ends[:-1], self.step_ends)]
        return {
            "steps": steps,
            "seconds": self.step_ends[-1] - self.t0,
            "step_seconds": durations,
            "batches": batches,
            "tokens": sum(length for batch in batches for length, _ in batch),
            "cpu_seconds": self.cpu_ends[-1] - self.cpu0 if self.cpu_ends else None,
            **extra,
        }


def _hf_recording_trainer(cls, recorder: Recorder):
    """A Trainer subclass that records each trained batch (not the dataloader's look-ahead)."""
    from transformers import TrainerCallback

    class Recording(cls):
        def training_step(self, model, inputs, *args, **kwargs):
            recorder.batch(inputs["attention_mask"], inputs["labels"])
            return super().training_step(model, inputs, *args, **kwargs)

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            recorder.start()

        def on_step_end(self, args, state, control, **kwargs):
            recorder.step_end()

    return Recording, Timing()


def lora_config(spec):
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules="all-linear",
                      bias="none", task_type="CAUSAL_LM")


def child_trainer(args, spec, base, tokenizer, encoded, out: Path) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from tunewright.models import load_model
    from tunewright.data.tokenize import collate

    recorder = Recorder()
    torch.manual_seed(spec.seed)
    model = get_peft_model(load_model(base), lora_config(spec))

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(encoded)

        def __getitem__(self, i):
            return encoded[i]

    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=spec.batch_size, max_steps=args.steps,
        learning_rate=spec.learning_rate, seed=spec.seed, save_strategy="no", report_to=[], disable_tqdm=True,
    )
    cls, callback = _hf_recording_trainer(Trainer, recorder)
    trainer = cls(model=model, args=training_args, train_dataset=Rows(), callbacks=[callback],
                  data_collator=lambda batch: collate(batch, tokenizer.pad_token_id))
    trainer.train()
    return recorder.result(settings={"bf16": training_args.bf16, "gradient_checkpointing": training_args.gradient_checkpointing})


def child_trl(args, spec, base, tokenizer, encoded, out: Path, variant: str) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from tunewright.models import load_model

    recorder = Recorder()
    overrides = {"b-defaults": {}, "b-fp32": {"bf16": False},
                 "b-fp32-nogc": {"bf16": False, "gradient_checkpointing": False}}[variant]
    steps = args.trl_default_steps if variant == "b-defaults" else args.steps
    # use_cpu=True: without it, SFTConfig's default bf16=True is refused outright on a machine with no
    # GPU ("Your setup doesn't support bf16/gpu"); on such a machine it changes nothing else.
    config = SFTConfig(
        output_dir=str(out), per_device_train_batch_size=spec.batch_size, max_steps=steps,
        learning_rate=spec.learning_rate, seed=spec.seed, save_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=True, **overrides,
    )
    dataset = Dataset.from_dict({"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]})
    torch.manual_seed(spec.seed)
    cls, callback = _hf_recording_trainer(SFTTrainer, recorder)
    trainer = cls(model=load_model(base), args=config, train_dataset=dataset, processing_class=tokenizer,
                  peft_config=lora_config(spec), callbacks=[callback])
    trainer.train()
    return recorder.result(settings={"bf16": config.bf16, "gradient_checkpointing": config.gradient_checkpointing,
                                     "extrapolated_from_steps": steps})


def register_compiled_lora() -> str:
    """A benchmark-only PEFT method: LoRA with every decoder layer compiled. Uses the public registry."""
    from tunewright.methods import get_method, register_method

    lora_cls = type(get_method("lora"))

    class CompiledLora(lora_cls):
        name = "lora-compiled-bench"
        description = "benchmark only: LoRA with torch.compile on each decoder layer's MLP"

        def wrap(self, model, spec):
            tuned = super().wrap(model, spec)
            # Whole decoder layers cannot be compiled usefully: the key/value cache the loop passes
            # (shared prefix, and transformers' default use_cache) puts a guard on each layer's cache
            # slot, so every layer recompiles and dynamo gives up after 8. The MLP (3/4 of the
            # linear FLOPs, LoRA included) touches no cache and compiles once for all 30 layers.
            for layer in tuned.get_base_model().get_decoder().layers:
                layer.mlp.compile()
            return tuned

    register_method(CompiledLora)
    return CompiledLora.name


def child_loop(args, spec, base, rows, out: Path, variant: str) -> dict:
    import tunewright.train.loop as loop

    recorder = Recorder()
    original_collate = loop.collate

    def recording_collate(batch, pad_id):
        if recorder.cpu0 is None:  # the loop starts its clock just before the first collate
            recorder.cpu0 = time.process_time()
        result = original_collate(batch, pad_id)
        recorder.batch(result["attention_mask"], result["labels"])
        return result

    loop.collate = recording_collate  # only records: the batches are the loop's own
    update = {"max_steps": args.steps, "checkpoint_every": 10**9}
    if variant == "c-fp32":
        update["precision"] = "fp32"
    elif spec.precision == "auto":  # what `tunewright train` runs: the planner's measured-fastest precision
        from tunewright.plan.hardware import detect_hardware, fastest_dtype

        update["precision"] = fastest_dtype(detect_hardware())
    if variant == "c-noprefix":
        update["share_prefix"] = False
    if variant == "c-nopack":
        update["packing"] = "off"
    if variant == "c-nofuse":
        update["fuse_lora"] = False
    if variant == "c-compile":
        # Against c-nofuse: dynamo would otherwise trace the fused layers' shared-input bookkeeping.
        update["method"], update["fuse_lora"] = register_compiled_lora(), False
    times: list[float] = []

    def on_step(info):
        times.append(info.elapsed)
        recorder.cpu_ends.append(time.process_time())

    result = loop.train_adapter(
        base=base, rows=rows, spec=spec.model_copy(update=update), run_dir=out / "run", adapter_dir=out / "adapter",
        callbacks=[on_step],
    )
    recorder.t0 = 0.0
    recorder.step_ends = times
    if recorder.cpu0 is None:
        recorder.cpu_ends = []
    data = recorder.result(
        settings={"precision": result.extra.get("precision", update.get("precision", spec.precision))},
        prefix_len=result.extra.get("shared_prefix_tokens", 0),
        loop_tokens_seen=result.tokens_seen,
        losses=result.losses,
    )
    if data["batches"] and data["tokens"] != result.tokens_seen:
        raise AssertionError(f"recorded {data['tokens']} tokens, the loop counted {result.tokens_seen}")
    if not data["batches"]:  # the loop no longer calls `collate` by that name: counts only
        data["tokens"] = result.tokens_seen
    return data


# ---- the packing prototype ------------------------------------------------------------------

def packed_inputs(rows):
    """The batch's rows back to back in one sequence, position ids restarting at 0 per row;
    transformers reads the restarts as packed sequences and builds a block-diagonal causal mask.
    Targets are next-token labels within each row (IGNORE_INDEX where a row ends). Packing after a
    shared prefix is the loop's own (``tunewright.train.packing``), not re-implemented here.
    """
    import torch

    ids, positions, targets = [], [], []
    for row in rows:
        ids += row.input_ids
        positions += list(range(len(row.input_ids)))
        targets += list(row.labels[1:]) + [IGNORE_INDEX]
    return torch.tensor([ids]), torch.tensor([positions]), torch.tensor(targets)


def packed_loss_sum(model, rows, prefix_len: int, pad_id: int):
    import torch.nn.functional as F

    from tunewright.train.loop import supervised_loss_sum
    from tunewright.data.tokenize import collate

    if prefix_len:
        return supervised_loss_sum(model, collate(rows, pad_id), prefix_len, packing="on")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids, positions, targets = packed_inputs(rows)
    hidden = base.get_decoder()(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state[0]
    keep = targets != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


def check_packing_equivalence(model, batch_rows, pad_id, prefix_len: int) -> dict:
    """Assert that every layout gives the same loss and LoRA gradients on one real batch."""
    import torch

    from tunewright.train.loop import supervised_loss_sum
    from tunewright.data.tokenize import collate

    trainable = [p for p in model.parameters() if p.requires_grad]
    # LoRA B starts at zero; nudge it so the check exercises the adapter path, then restore it.
    saved = [p.detach().clone() for p in trainable]
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in trainable:
            p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    layouts = {
        "padded": lambda: supervised_loss_sum(model, collate(batch_rows, pad_id), 0),
        "padded+shared-prefix": lambda: supervised_loss_sum(model, collate(batch_rows, pad_id), prefix_len,
                                                            packing="off"),
        "packed": lambda: packed_loss_sum(model, batch_rows, 0, pad_id),
        "packed+shared-prefix": lambda: packed_loss_sum(model, batch_rows, prefix_len, pad_id),
    }
    values = {}
    for name, fn in layouts.items():
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        values[name] = (loss.item(), torch.cat([p.grad.flatten() for p in trainable]))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for p, s in zip(trainable, saved):
            p.copy_(s)
    ref_loss, ref_grad = values["padded"]
    report = {}
    for name, (loss, grad) in values.items():
        loss_rel = abs(loss - ref_loss) / abs(ref_loss)
        grad_rel = float((grad - ref_grad).norm() / ref_grad.norm())
        report[name] = {"loss_sum": loss, "loss_rel_diff": loss_rel, "grad_rel_diff": grad_rel}
        assert loss_rel < 1e-4, f"{name}: loss {loss} differs from padded {ref_loss}"
        assert grad_rel < 1e-3, f"{name}: LoRA gradients differ from padded by {grad_rel:.2e}"
    return report


def child_mini(args, spec, base, tokenizer, encoded, variant: str) -> dict:
    """A minimal copy of train_adapter's step (plan, AdamW, linear schedule, clipping, label-normalised
    loss) in which only the batch layout changes. No checkpoints, no adapter save."""
    import torch
    from transformers import get_scheduler

    from tunewright.data.batching import plan_micro_batches
    from tunewright.data.batching import shared_prefix_length
    from tunewright.train.loop import supervised_loss_sum
    from tunewright.methods import get_method
    from tunewright.data.tokenize import collate

    torch.set_num_threads(spec.threads or os.cpu_count() or 1)
    torch.manual_seed(spec.seed)
    method = get_method(spec.method)
    model = method.wrap(method.load_base(base, spec), spec)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(method.optimizer_groups(model, spec), lr=spec.learning_rate,
                                  weight_decay=spec.weight_decay)
    plan = plan_micro_batches([len(e.input_ids) for e in encoded], spec.batch_size, spec.epochs, spec.seed,
                              args.steps, 1)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(spec.warmup_ratio * len(plan)),
                              num_training_steps=len(plan))
    pad_id = tokenizer.pad_token_id
    prefix_len = shared_prefix_length(encoded)
    check = check_packing_equivalence(model, [encoded[i] for i in plan[0][0]], pad_id, prefix_len)

    recorder = Recorder()
    losses = []
    recorder.start()
    for micro_batches in plan:
        batch_rows = [encoded[i] for i in micro_batches[0]]
        n_labels = sum(label_positions(r.labels) for r in batch_rows)
        if variant == "mini-grouped":
            batch = collate(batch_rows, pad_id)
            recorder.batch(batch["attention_mask"], batch["labels"])
            loss_sum = supervised_loss_sum(model, batch, 0)
        else:
            recorder.batches.append([(len(r.input_ids), label_positions(r.labels)) for r in batch_rows])
            loss_sum = packed_loss_sum(model, batch_rows, prefix_len if variant == "mini-packed-prefix" else 0, pad_id)
        loss = loss_sum / n_labels
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, spec.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        recorder.step_end()
    return recorder.result(prefix_len=prefix_len, losses=losses, equivalence=check)


def run_child(args) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    _workspace, rows, spec, base, tokenizer, encoded = load_demo(Path(args.workspace))
    out = Path(args.workspace) / "bench" / args.child
    out.mkdir(parents=True, exist_ok=True)
    name = args.child
    if name == "a":
        data = child_trainer(args, spec, base, tokenizer, encoded, out)
    elif name.startswith("b-"):
        data = child_trl(args, spec, base, tokenizer, encoded, out, name)
    elif name.startswith("c"):
        data = child_loop(args, spec, base, rows, out, name)
    elif name.startswith("mini-"):
        data = child_mini(args, spec, base, tokenizer, encoded, name)
    else:
        raise SystemExit(f"unknown contender {name}")
    data["name"] = name
    from tunewright.plan.hardware import peak_rss_bytes

    # Measured here, not from wait4 in the parent: Linux's ru_maxrss carries the parent's size
    # across fork and exec, VmHWM does not.
    data["peak_rss_mb"] = peak_rss_bytes() / 2**20
    Path(args.result).write_text(json.dumps(data))


# --------------------------------------------------------------------------------------------
# Parent: build the data, run the children, print and save
# --------------------------------------------------------------------------------------------

def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes on the machine have used since boot (Linux /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def spawn(name: str, workspace: Path, args, scratch: Path) -> dict:
    result_file = scratch / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--workspace", str(workspace),
               "--result", str(result_file), "--steps", str(args.steps),
               "--trl-default-steps", str(args.trl_default_steps)]
    print(f"--- {name}: {LABELS[name]}", flush=True)
    busy_before = busy_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    busy_after = busy_cpu_seconds()
    # Cores the rest of the machine kept busy while this contender ran: 0 on a quiet machine.
    others = None
    if busy_before is not None and busy_after is not None:
        others = max(0.0, (busy_after - busy_before - usage.ru_utime - usage.ru_stime) / wall)
    if process.returncode != 0 or not result_file.exists():
        print(f"    {name} failed (exit {process.returncode})", flush=True)
        return {"name": name, "error": f"exit code {process.returncode}", "process_seconds": wall}
    data = json.loads(result_file.read_text())
    data["process_seconds"] = wall
    data["other_cores_busy"] = others
    print(f"    {data['steps']} steps, {data['tokens']} tokens in {data['seconds']:.1f} s "
          f"({data['tokens'] / data['seconds']:.1f} tokens/s), peak RSS {data['peak_rss_mb']:.0f} MB, "
          f"process {wall:.0f} s, other processes kept {others if others is not None else float('nan'):.2f} cores busy",
          flush=True)
    return data


def ran_in(data: dict) -> str:
    """The precision a contender's matmuls ran in: Tunewright's recorded one, TRL's bf16 flag."""
    settings = data.get("settings") or {}
    if settings.get("precision") in ("bf16", "fp32"):
        return settings["precision"]
    return "bf16" if settings.get("bf16") else "fp32"


def summarise(data: dict, flops: FlopModel, peaks: dict[str, float], demo_tokens: int, demo_steps: int) -> dict:
    """``peaks``: matmul FLOP/s per precision; each contender is held to the rate of the precision
    it ran in, so a bf16 run is not flattered by an fp32 ceiling."""
    if "error" in data:
        return data
    peak = peaks[ran_in(data)]
    tps = data["tokens"] / data["seconds"]
    useful = sum(flops.row(length, n) for batch in data["batches"] for length, n in batch)
    steady = data["step_seconds"][1:]
    steady_tokens = sum(length for batch in data["batches"][1:] for length, _ in batch)
    threads = os.cpu_count() or 1
    summary = {
        "tokens_per_s": tps,
        "tokens_per_cpu_s_x_threads": data["tokens"] / data["cpu_seconds"] * threads if data.get("cpu_seconds") else None,
        "steady_tokens_per_s": steady_tokens / sum(steady) if steady else None,
        "median_step_s": statistics.median(data["step_seconds"]),
        "demo_wall_s": demo_tokens / tps,
        "demo_wall_from_steps_s": data["seconds"] / data["steps"] * demo_steps,
        "useful_gflops_per_s": useful / data["seconds"] / 1e9,
        "pct_of_ceiling": 100 * useful / data["seconds"] / peak,
        "precision": ran_in(data),
    }
    if data["name"].startswith("c") and data["batches"]:
        prefix = data.get("prefix_len", 0)
        executed = sum(flops.batch_executed([length for length, _ in batch], sum(n for _, n in batch), prefix)
                       for batch in data["batches"])
        summary["executed_gflops_per_s"] = executed / data["seconds"] / 1e9
        summary["executed_pct_of_peak"] = 100 * executed / data["seconds"] / peak
    return {**data, **summary}


def best_run(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = max(ok, key=lambda r: r["tokens"] / r["seconds"])
    return {**best, "runs_tokens_per_s": [r["tokens"] / r["seconds"] for r in ok]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per contender (default: one demo epoch, ceil(rows / batch))")
    parser.add_argument("--only", default="a,b,c", help="comma-separated subset of a,b,c, or contender names")
    parser.add_argument("--skip-trl-defaults", action="store_true", help="leave out TRL at bf16 defaults (minutes a step)")
    parser.add_argument("--trl-default-steps", type=int, default=2, help="steps for TRL at its defaults, extrapolated")
    parser.add_argument("--ablations", action="store_true", help="also: prefix sharing off, torch.compile, packing")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--repeat", type=int, default=2, help="runs of a and of c, alternating; each keeps its best")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other contenders' results already in --output (to rerun one contender)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    import torch
    import peft
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    names = []
    for key in [k.strip() for k in args.only.split(",") if k.strip()]:
        if key in MAIN:
            names += [n for n, _ in MAIN[key] if not (n == "b-defaults" and args.skip_trl_defaults)]
        elif key in LABELS:
            names.append(key)  # one contender by name, e.g. an ablation
        else:
            parser.error(f"--only takes a, b, c or contender names ({', '.join(LABELS)}); got {key!r}")
    if any(n.startswith("b-") for n in names) and trl_version is None:
        parser.error("TRL is not installed: pip install -r requirements-dev.txt -c constraints.txt, or --only a,c")
    if args.ablations:
        names += [n for n, _ in ABLATIONS]

    with tempfile.TemporaryDirectory(prefix="tunewright-bench-") as tmp:
        tmp = Path(tmp)
        workspace = build_workspace(tmp / "workspace")
        _ws, rows, spec, base, _tokenizer, encoded = load_demo(workspace.root)
        config = json.loads((base.folder / "config.json").read_text())
        flops = FlopModel(config, spec.r)
        steps_per_epoch = math.ceil(len(encoded) / spec.batch_size)
        if args.steps is None:
            args.steps = steps_per_epoch
        epoch_tokens = sum(len(e.input_ids) for e in encoded)
        demo_tokens = round(epoch_tokens * spec.epochs)
        demo_steps = round(steps_per_epoch * spec.epochs)
        epoch_flops = sum(flops.row(len(e.input_ids), label_positions(e.labels)) for e in encoded)
        flops_per_token = epoch_flops / epoch_tokens

        print(f"measuring fp32 and bf16 matmul rates on {torch.get_num_threads()} threads ...", flush=True)
        peak = matmul_rate(1024)
        peak_bf16 = matmul_rate(1024, dtype="bf16")
        tokens_per_batch = round(spec.batch_size * epoch_tokens / len(encoded))
        shaped = matmul_rate(shape=(tokens_per_batch, flops.d_model, config["intermediate_size"]))
        ceiling = peak / flops_per_token
        print(f"  1024x1024: {peak / 1e9:.1f} GFLOP/s fp32, {peak_bf16 / 1e9:.1f} bf16; ({tokens_per_batch}x{flops.d_model})@"
              f"({flops.d_model}x{config['intermediate_size']}): {shaped / 1e9:.1f} GFLOP/s", flush=True)
        print(f"demo: {len(encoded)} rows, {epoch_tokens} tokens/epoch "
              f"({sum(label_positions(e.labels) for e in encoded)} labelled), {spec.epochs:g} epochs = {demo_tokens} tokens, "
              f"{demo_steps} steps at batch {spec.batch_size}; running {args.steps} steps each", flush=True)
        print(f"FLOPs per useful token: {flops_per_token / 1e6:.0f} M -> ceiling {ceiling:.0f} tokens/s", flush=True)

        # a and c alternate --repeat times: this VM's speed drifts by 10-20% over minutes, and a
        # ratio taken from one run of each would mostly measure the drift. Each keeps its best run.
        runs: dict[str, list[dict]] = {}
        repeated = [n for n in names if n in ("a", "c", "c-fp32")]
        for name in names:
            if name not in repeated:
                runs[name] = [spawn(name, workspace.root, args, tmp)]
            elif name == repeated[0]:
                for _ in range(args.repeat):
                    for other in repeated:
                        runs.setdefault(other, []).append(spawn(other, workspace.root, args, tmp))
        raw = {name: best_run(runs[name]) for name in names}
        # The machine may be shared: measure again and keep the better rate as the ceiling.
        peak_after = matmul_rate(1024)
        if peak_after > peak:
            peak, ceiling = peak_after, peak_after / flops_per_token
        print(f"fp32 matmul rate after the runs: {peak_after / 1e9:.1f} GFLOP/s; ceiling uses {peak / 1e9:.1f}", flush=True)
        peaks = {"fp32": peak, "bf16": max(peak_bf16, matmul_rate(1024, dtype="bf16"))}
        results = {name: summarise(data, flops, peaks, demo_tokens, demo_steps) for name, data in raw.items()}

    if args.merge and args.output.exists():
        previous = json.loads(args.output.read_text()).get("results", {})
        merged = {**previous, **results}
        results = {name: merged[name] for name in LABELS if name in merged}
    base_tps = results.get("a", {}).get("tokens_per_s")
    for data in results.values():
        if base_tps and "tokens_per_s" in data:
            data["vs_a"] = data["tokens_per_s"] / base_tps

    print()
    print(f"SmolLM2-135M-Instruct, LoRA r={spec.r} alpha={spec.alpha} all-linear, batch {spec.batch_size}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"demo = {len(encoded)} rows x {spec.epochs:g} epochs = {demo_tokens} useful tokens, {demo_steps} steps; "
          f"ceiling {ceiling:.0f} tokens/s ({flops_per_token / 1e6:.0f} MFLOP/token at {peak / 1e9:.1f} GFLOP/s)")
    header = (f"{'contender':46s} {'prec':>4s} {'steps':>5s} {'tok/s':>7s} {'steady':>7s} {'vs a':>6s} {'demo wall':>10s} "
              f"{'peak RSS':>9s} {'% ceil':>7s} {'tok/CPU-s':>9s} {'others':>6s}")
    print(header)
    print("-" * len(header))
    for name, data in results.items():
        label = LABELS[name]
        if "error" in data:
            print(f"{label:46s} failed: {data['error']}")
            continue
        vs = f"{data['vs_a']:5.2f}x" if "vs_a" in data else "     -"
        steady = f"{data['steady_tokens_per_s']:7.1f}" if data["steady_tokens_per_s"] else "      -"
        wall = data["demo_wall_s"]
        wall_text = f"{wall / 60:7.1f} min" if wall >= 600 else f"{wall:8.0f} s"
        per_cpu = data["tokens_per_cpu_s_x_threads"]
        per_cpu_text = f"{per_cpu:9.1f}" if per_cpu else "        -"
        others = data.get("other_cores_busy")
        others_text = f"{others:6.2f}" if others is not None else "     -"
        print(f"{label:46s} {data['precision']:>4s} {data['steps']:5d} {data['tokens_per_s']:7.1f} {steady} {vs} {wall_text:>10s} "
              f"{data['peak_rss_mb']:6.0f} MB {data['pct_of_ceiling']:6.1f}% {per_cpu_text} {others_text}")
    if "c" in results and "executed_pct_of_peak" in results["c"]:
        c = results["c"]
        print(f"\nTunewright loop: useful {c['useful_gflops_per_s']:.1f} GFLOP/s = {c['pct_of_ceiling']:.1f}% of the ceiling; "
              f"executed (prefix once per batch, padding) {c['executed_gflops_per_s']:.1f} GFLOP/s = "
              f"{c['executed_pct_of_peak']:.1f}% of the 1024x1024 matmul rate, "
              f"{100 * c['executed_gflops_per_s'] * 1e9 / shaped:.1f}% of the model-shaped GEMM rate")
    if "c" in results and "c-fp32" in results and "error" not in results["c"] and "error" not in results["c-fp32"]:
        print(f"Tunewright in {results['c']['precision']} against its own fp32: "
              f"{results['c']['tokens_per_s'] / results['c-fp32']['tokens_per_s']:.2f}x tokens/s "
              f"(% ceil: each against its precision's matmul rate, fp32 {peaks['fp32'] / 1e9:.0f}, "
              f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s)")
    if "b-defaults" in results and "error" not in results["b-defaults"]:
        print(f"TRL at defaults ran {results['b-defaults']['steps']} steps; its demo wall is extrapolated from them.")
    check = next((d["equivalence"] for d in results.values() if "equivalence" in d), None)
    if check:
        print("\npacking equivalence (one real batch, LoRA perturbed): " + "; ".join(
            f"{k}: loss {v['loss_rel_diff']:.1e}, grad {v['grad_rel_diff']:.1e}" for k, v in check.items()))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "threads": torch.get_num_threads(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "trl": trl_version},
        "setup": {"model": base.ref, "r": spec.r, "alpha": spec.alpha, "batch_size": spec.batch_size,
                  "learning_rate": spec.learning_rate, "steps": args.steps, "trl_default_steps": args.trl_default_steps,
                  "rows": len(encoded), "epoch_tokens": epoch_tokens, "epochs": spec.epochs,
                  "demo_tokens": demo_tokens, "demo_steps": demo_steps},
        "flops": {"matmul_1024_flops_per_s": peak, "matmul_1024_bf16_flops_per_s": peaks["bf16"],
                  "matmul_model_shape_flops_per_s": shaped,
                  "flops_per_useful_token": flops_per_token, "ceiling_tokens_per_s": ceiling,
                  "n_linear_params": flops.n_lin, "n_lora_params": flops.n_lora},
        "results": {name: {k: v for k, v in data.items() if k not in ("batches",)} for name, data in results.items()},
    }
    args.output.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")


if __name__ == "__main__":
    main()
