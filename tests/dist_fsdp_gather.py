"""Run by test_distributed under torchrun: FSDP2-shard the tiny PEFT model over gloo processes on
the CPU, then save its adapter the naive way and the gathering way. Writes OUT/rank<N>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main(model_dir: str, out: str) -> None:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    from tunewright.errors import TunewrightError
    from tunewright.train.sharded import check_adapter_state, gather_adapter_state

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=4, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # B starts at zero; a wrong gather must be visible
    reference = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    shapes = {k: tuple(v.shape) for k, v in reference.items()}

    for layer in model.get_base_model().model.layers:
        fully_shard(layer)
    fully_shard(model)
    naive = get_peft_model_state_dict(model)
    local = {k: v.to_local() if hasattr(v, "to_local") else v for k, v in naive.items()}
    refusals = {}
    for label, state in (("naive", naive), ("local_shards", local)):
        try:
            check_adapter_state(state, shapes)
            refusals[label] = None
        except TunewrightError as exc:
            refusals[label] = str(exc)

    gathered = gather_adapter_state(model, reference_shapes=shapes, is_main=rank == 0)
    result = {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "sharded": all(type(v).__name__ == "DTensor" for v in naive.values()),
        "local_elements": sum(v.numel() for v in local.values()),
        "full_elements": sum(v.numel() for v in reference.values()),
        "refusals": refusals,
        "gathered": gathered is not None,
    }
    if gathered is not None:
        result["same_keys"] = sorted(gathered) == sorted(reference)
        result["max_abs_diff"] = max((gathered[k] - reference[k]).abs().max().item() for k in reference)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    # Both ranks leave together: a rank tearing gloo down while its peer still holds the pair's
    # connection was seen to abort the peer once under heavy CPU load.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
