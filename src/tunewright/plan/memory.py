"""Peak memory of a training run, from the model's shape and the batches the loop will actually build.

peak = runtime + weights + trainable states + ALLOCATOR x (activations + logits), with

* runtime: the process with torch, transformers and peft imported (389 MiB RSS measured on the
  reference machine; a CUDA context instead on a GPU);
* weights: every parameter at the dtype the loop holds them in (fp32 on a CPU; 4-bit for QLoRA);
* trainable states: parameter, gradient, two AdamW moments and the foreach step's temporaries, fp32;
* activations: what autograd keeps for backward, per token per decoder layer, counted with
  ``saved_tensors_hooks`` on a real LoRA step of SmolLM2 (Llama decoder, sdpa attention):
      4h (two residual inputs and two normed outputs) + 2·q_dim (query, attention output)
      + 2·kv_dim (rotated key, value) + 4i (gate, up, SiLU(gate), their product)
      + r per adapted linear (LoRA's A output) + n_heads (attention log-sum-exp) + 2 (norm scales)
  elements at the activation dtype. The shared system prompt runs once per micro-batch, with its
  key/value cache repeated per row. Gradient checkpointing keeps only each layer's input (h) plus
  one layer's worth recomputed during backward;
* logits: only labelled positions reach the vocabulary (our loop), one chunk of at most
  ``LOSS_CHUNK`` positions at a time (``train/losses.py``): the chunk's fp32 logits and the
  log-sum-exp pass's temporary copy, freed before the next chunk;
* ALLOCATOR: transient gradients and what the allocator holds back after freeing. Fitted on peak
  RSS of the real loop (see ``CPU_ALLOCATOR_FACTOR``); ``tunewright plan --calibrate`` re-fits it
  from a few real steps on this machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import TrainSpec
from ..errors import TunewrightError
from ..data.batching import LOSS_CHUNK
from ..models.layers import HEAD_KEYS, HIDDEN_KEYS, decoder_linears, head_dim_of, kv_heads_of, text_config

MIB = 2**20
CPU_RUNTIME_BYTES = 400 * MIB
CUDA_RUNTIME_BYTES = 600 * MIB  # CUDA context and cuBLAS workspaces on the device
# Peak RSS of the real loop on the reference machine (SmolLM2-135M) over what autograd holds at
# once: 1.76-1.86 on same-length synthetic rows (batch 4-16, 180 tokens), 1.98-2.14 on the demo's
# mixed-length rows (batch 4, 8, 16). Backward's transient gradients plus glibc keeping freed
# blocks of many sizes in per-thread arenas; PyTorch's CUDA caching allocator wastes far less.
CPU_ALLOCATOR_FACTOR = 2.0
CUDA_ALLOCATOR_FACTOR = 1.2
LOGIT_COPIES = 2
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class ModelShape:
    n_params: int
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    # (path, in, out) of each linear in one decoder layer, read from the model (``models.layers``);
    # empty: unknown, Llama's seven projections are assumed.
    layer_linears: tuple[tuple[str, int, int], ...] = ()

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear in one decoder layer."""
        if self.layer_linears:
            return {name: (a, b) for name, a, b in self.layer_linears}
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Decoder-layer linear weights, all layers: the matmuls every token goes through."""
        return self.n_layers * sum(a * b for a, b in self.linears().values())


def model_shape(folder: str | Path) -> ModelShape:
    """Shape of a Llama-style decoder from its config.json; parameter count from the safetensors headers."""
    folder = Path(folder)
    try:
        config = text_config(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError, AttributeError) as exc:
        raise TunewrightError(f"cannot read the model config: {exc}", file=folder / "config.json") from None

    def get(*names, default=None):
        for name in names:
            if config.get(name) is not None:
                return int(config[name])
        if default is None:
            raise TunewrightError(f"config.json has none of {', '.join(names)}: the planner needs a decoder-only "
                                  "transformer config", file=folder / "config.json")
        return default

    hidden = get(*HIDDEN_KEYS)
    heads = get(*HEAD_KEYS)
    shape = ModelShape(
        n_params=0, n_layers=get("num_hidden_layers", "n_layer"), hidden=hidden,
        intermediate=get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden), n_heads=heads,
        n_kv_heads=kv_heads_of(config), head_dim=head_dim_of(config),
        vocab=get("vocab_size"), tied=bool(config.get("tie_word_embeddings", True)),
    )
    linears = decoder_linears(folder)
    if linears:
        shape = ModelShape(**{**asdict(shape), "layer_linears": tuple((n, a, b) for n, (a, b) in linears.items())})
    counted = _count_params(folder)
    estimate = shape.linear_params + shape.vocab * hidden * (1 if shape.tied else 2) + (2 * shape.n_layers + 1) * hidden
    return ModelShape(**{**asdict(shape), "n_params": counted or estimate})


def _count_params(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for weights in sorted(folder.glob("*.safetensors")):
        with safe_open(weights, framework="pt") as handle:
            for key in handle.keys():
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def lora_params(shape: ModelShape, r: int, target_modules) -> tuple[int, int]:
    """(trainable parameters, adapted linears per layer) of LoRA on ``target_modules``."""
    linears = shape.linears()
    if target_modules == "all-linear":  # peft: every linear in the decoder layers (the output head is not)
        chosen = linears
    else:
        wanted = [m.rsplit(".", 1)[-1] for m in target_modules]
        chosen = {name: dims for name, dims in linears.items() if name.rsplit(".", 1)[-1] in wanted}
    return shape.n_layers * sum(r * (a + b) for a, b in chosen.values()), len(chosen)


@dataclass(frozen=True)
class MicroBatch:
    rows: int
    width: int  # padded length of the longest row
    labelled: int  # positions that go through the output head
    prefix: int = 0  # tokens shared by every row and run once (0: not shared)
    tokens: int = 0  # non-padding tokens, what the loop's tokens/s counts


@dataclass(frozen=True)
class MemoryEstimate:
    runtime: int
    weights: int
    trainable_states: int
    activations: int
    logits: int
    allocator_factor: float
    total: int

    def to_dict(self) -> dict:
        return asdict(self)


def activation_elements_per_token_layer(shape: ModelShape, lora_r: int, lora_linears: int) -> int:
    return (4 * shape.hidden + 2 * shape.q_dim + 2 * shape.kv_dim + 4 * shape.intermediate
            + lora_r * lora_linears + shape.n_heads + 2)


def activation_bytes(shape: ModelShape, mb: MicroBatch, *, lora_r: int, lora_linears: int, checkpointing: bool,
                     dtype_bytes: int) -> int:
    per_layer = activation_elements_per_token_layer(shape, lora_r, lora_linears)
    tokens = mb.rows * mb.width
    if checkpointing:
        elements = tokens * (shape.n_layers * shape.hidden + per_layer)
    elif mb.prefix and mb.rows > 1:
        suffix = mb.rows * (mb.width - mb.prefix)
        repeated_cache = mb.rows * mb.prefix * 2 * shape.kv_dim * shape.n_layers
        elements = (suffix + mb.prefix) * shape.n_layers * per_layer + repeated_cache
    else:
        elements = tokens * shape.n_layers * per_layer
    return int(elements * dtype_bytes)


def weight_bytes(shape: ModelShape, dtype: str, method: str) -> int:
    from ..methods import get_method

    return get_method(method).weight_bytes(shape.n_params, shape.linear_params, DTYPE_BYTES[dtype])


def predict_peak(shape: ModelShape, micro_batches, *, trainable: int, lora_r: int, lora_linears: int,
                 checkpointing: bool, dtype: str, method: str, device: str,
                 allocator_factor: float | None = None) -> MemoryEstimate:
    """Peak memory over ``micro_batches`` (resident set on a CPU, device memory on a GPU)."""
    factor = allocator_factor or (CUDA_ALLOCATOR_FACTOR if device == "cuda" else CPU_ALLOCATOR_FACTOR)
    from ..methods import get_method

    act_bytes = DTYPE_BYTES["bf16"] if get_method(method).quantized_base else DTYPE_BYTES[dtype]
    worst_act, worst_logits, worst = 0, 0, -1
    for mb in micro_batches:
        act = activation_bytes(shape, mb, lora_r=lora_r, lora_linears=lora_linears, checkpointing=checkpointing,
                               dtype_bytes=act_bytes)
        logits = min(mb.labelled, LOSS_CHUNK) * shape.vocab * 4 * LOGIT_COPIES
        if act + logits > worst:
            worst, worst_act, worst_logits = act + logits, act, logits
    runtime = CUDA_RUNTIME_BYTES if device == "cuda" else CPU_RUNTIME_BYTES
    weights = weight_bytes(shape, dtype, method)
    states = trainable * 4 * 5
    total = runtime + weights + states + int(factor * (worst_act + worst_logits))
    return MemoryEstimate(runtime=runtime, weights=weights, trainable_states=states, activations=worst_act,
                          logits=worst_logits, allocator_factor=factor, total=total)


def fixed_bytes(estimate: MemoryEstimate) -> int:
    """The part of a peak that does not scale with the batch: what calibration does not re-fit."""
    return estimate.runtime + estimate.weights + estimate.trainable_states


def trainable_params(folder: Path, shape: ModelShape, spec: TrainSpec) -> tuple[int, int, int]:
    """(trainable parameters, LoRA rank, adapted linears per layer) for the recipe's method.

    The method is built on the meta device (shapes, no weights) and its trainable parameters
    counted, which covers every method, DoRA's magnitudes included; a method that cannot be built
    without real weights (QLoRA's quantiser, PiSSA's SVD) gets LoRA's closed-form count.
    """
    from ..methods import get_method

    method = get_method(spec.method)
    count, linears = lora_params(shape, spec.r, spec.target_modules)
    lora_like = method.uses_lora_options
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):
            wrapped = method.wrap(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True)), spec)
        count = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    except Exception:  # noqa: BLE001 - any failure to build on meta falls back to the closed form
        pass
    return (count, spec.r, linears) if lora_like else (count, 0, 0)
