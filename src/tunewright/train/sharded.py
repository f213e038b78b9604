"""FSDP and DeepSpeed ZeRO-3 for GPU clusters: the accelerate config, and saving a sharded adapter.

Sharding splits every parameter across ranks. Saving an adapter from a sharded model with a plain
``get_peft_model_state_dict`` writes whatever piece the calling rank holds: a zero-element tensor
under ZeRO-3 and FSDP's flat parameters, a slice under FSDP2 - an adapter that loads and silently
does nothing. ``gather_adapter_state`` gathers the full trainable weights and refuses to return a
tensor that is empty or of the wrong shape.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Mapping, Sequence

import torch

from ..config import TrainSpec
from ..errors import TunewrightError
from ..io import atomic_write_text

# --- the accelerate config ---------------------------------------------------------------------


def decoder_layer_classes(model_folder: Path) -> list[str]:
    """The transformer block class(es) FSDP wraps one by one (LlamaDecoderLayer for SmolLM2)."""
    import transformers

    try:
        architecture = json.loads((Path(model_folder) / "config.json").read_text())["architectures"][0]
        layers = list(getattr(transformers, architecture)._no_split_modules or [])
    except (OSError, KeyError, IndexError, AttributeError, ValueError):
        layers = []
    return layers or ["LlamaDecoderLayer"]


def _mixed_precision(spec: TrainSpec) -> str:
    return spec.precision if spec.precision in ("bf16", "fp16") else "no"


def accelerate_config(mode: str, spec: TrainSpec, *, nproc: int, num_machines: int, machine_rank: int,
                      main_process_ip: str | None, main_process_port: int | None, layer_classes: Sequence[str],
                      deepspeed_file: Path | None = None) -> dict:
    """accelerate's own config-file schema (what ``accelerate config`` writes), for one run."""
    config: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "num_processes": nproc * num_machines,  # accelerate counts processes over all machines
        "num_machines": num_machines,
        "machine_rank": machine_rank,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "gpu_ids": "all",
        "debug": False,
    }
    if num_machines > 1:
        config["main_process_ip"] = main_process_ip
        config["main_process_port"] = main_process_port or 29500
    if mode == "fsdp":
        config["distributed_type"] = "FSDP"
        config["mixed_precision"] = _mixed_precision(spec)
        config["fsdp_config"] = {
            "fsdp_version": 1,
            "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": ",".join(layer_classes),
            # PEFT mixes frozen and trainable weights inside one wrapped layer; flat parameters
            # would need them uniform, original parameters keep them apart.
            "fsdp_use_orig_params": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_forward_prefetch": False,
            "fsdp_offload_params": False,
            "fsdp_sync_module_states": True,
            "fsdp_cpu_ram_efficient_loading": False,
        }
    elif mode == "zero3":
        config["distributed_type"] = "DEEPSPEED"
        # The model is loaded before accelerate starts, then partitioned when prepared.
        config["deepspeed_config"] = {"deepspeed_config_file": str(deepspeed_file), "zero3_init_flag": False}
        if num_machines > 1:
            # Each machine starts its own launch (what we print), rather than pdsh reaching out over ssh.
            config["deepspeed_config"]["deepspeed_multinode_launcher"] = "standard"
    else:
        raise ValueError(f"no accelerate config for mode {mode!r}")
    return config


def deepspeed_config(spec: TrainSpec, world_size: int) -> dict:
    per_rank = math.ceil(spec.batch_size / world_size)
    precision = _mixed_precision(spec)
    return {
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            # Without it, saving under ZeRO-3 writes each rank's empty placeholders.
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        # One optimizer step per recipe step: every rank runs grad_accum micro-batches per step.
        "gradient_accumulation_steps": spec.grad_accum,
        "gradient_clipping": spec.max_grad_norm,
        "train_micro_batch_size_per_gpu": per_rank,
        "train_batch_size": per_rank * spec.grad_accum * world_size,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
    }


def write_launch_config(mode: str, spec: TrainSpec, folder: Path, *, model_folder: Path, nproc: int,
                        num_machines: int = 1, machine_rank: int = 0, main_process_ip: str | None = None,
                        main_process_port: int | None = None) -> Path:
    import yaml

    deepspeed_file = None
    if mode == "zero3":
        deepspeed_file = folder / "deepspeed_config.json"
        atomic_write_text(deepspeed_file, json.dumps(deepspeed_config(spec, nproc * num_machines), indent=2) + "\n")
    config = accelerate_config(
        mode, spec, nproc=nproc, num_machines=num_machines, machine_rank=machine_rank, main_process_ip=main_process_ip,
        main_process_port=main_process_port, layer_classes=decoder_layer_classes(model_folder), deepspeed_file=deepspeed_file,
    )
    path = folder / "accelerate_config.yaml"
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=True))
    return path


# --- gathering a sharded adapter -----------------------------------------------------------------


def _is_fsdp(model) -> bool:
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):
        return True  # FSDP2 (fully_shard)
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - every torch we support has it
        return False
    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())


def _deepspeed_gather(params: list[torch.nn.Parameter]) -> ContextManager:
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def gather_trainable_state(
    model, *, is_main: bool = True, gather: Callable[[list[torch.nn.Parameter]], ContextManager] | None = None,
    unwrapped=None,
) -> dict[str, torch.Tensor] | None:
    """Full-size trainable weights under the PEFT model's parameter names, on the main rank only.

    Every rank must call this (the gathers are collective); the others get None. ``gather``
    overrides how ZeRO-3-partitioned parameters are made whole (tests simulate DeepSpeed with it).
    """
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # Onto rank 0's CPU only. FSDP2 then gathers just the trainable weights; FSDP1's full state
        # dict streams every wrapped layer through rank 0's CPU first (as Trainer's saves do), so
        # a save there costs host memory and time the size of the model.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        full = get_model_state_dict(model, options=options)
        return {k: v.detach().clone() for k, v in full.items()} if is_main else None
    # Names from the PeftModel itself: DeepSpeed's engine would prefix every one with "module.".
    trainable = [(n, p) for n, p in (unwrapped or model).named_parameters() if p.requires_grad]
    if gather is None and any(hasattr(p, "ds_id") for _, p in trainable):
        gather = _deepspeed_gather
    with (gather([p for _, p in trainable]) if gather is not None else nullcontext()):
        if not is_main:
            return None
        return {n: p.detach().to("cpu", copy=True) for n, p in trainable}


def check_adapter_state(state: Mapping[str, torch.Tensor], reference_shapes: Mapping[str, tuple] | None) -> None:
    """Refuse an adapter a sharded save got wrong, before it reaches disk."""
    if not state:
        raise TunewrightError("refusing to save an adapter with no weights (were sharded parameters gathered?)")
    for key, tensor in state.items():
        if type(tensor).__name__ == "DTensor":
            raise TunewrightError(f"refusing to save the adapter: '{key}' is still a sharded DTensor (FSDP2), not gathered")
        if tensor.numel() == 0:
            raise TunewrightError(
                f"refusing to save the adapter: '{key}' has 0 elements - a sharded parameter was saved "
                "without being gathered (ZeRO-3 / FSDP keep only a placeholder on each rank)"
            )
    if reference_shapes is None:
        return
    if set(state) != set(reference_shapes):
        missing, extra = sorted(set(reference_shapes) - set(state)), sorted(set(state) - set(reference_shapes))
        raise TunewrightError(f"refusing to save the adapter: missing weights {missing[:3]}, unexpected {extra[:3]}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(reference_shapes[key]):
            raise TunewrightError(
                f"refusing to save the adapter: '{key}' has shape {tuple(tensor.shape)}, expected "
                f"{tuple(reference_shapes[key])} - only one rank's shard of it was gathered"
            )


def gather_adapter_state(
    model, *, reference_shapes: Mapping[str, tuple] | None = None, is_main: bool = True,
    gather: Callable[[list[torch.nn.Parameter]], ContextManager] | None = None, unwrapped=None,
) -> dict[str, torch.Tensor] | None:
    """The adapter's weights under PEFT's file keys, full size and checked; None off the main rank.

    ``model`` is what the ranks run (possibly FSDP-wrapped); ``unwrapped`` the PeftModel inside,
    whose names PEFT maps to adapter file keys. ``reference_shapes`` are the adapter's shapes
    taken before sharding.
    """
    from peft import get_peft_model_state_dict

    full = gather_trainable_state(model, is_main=is_main, gather=gather, unwrapped=unwrapped)
    if full is None:
        return None
    state = get_peft_model_state_dict(unwrapped if unwrapped is not None else model, state_dict=full)
    check_adapter_state(state, reference_shapes)
    return state
