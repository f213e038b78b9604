"""The same recipe on many processes: who this process is, and how its work joins the others'.

A launcher (``torch.distributed.run`` or ``accelerate launch``) starts one worker per device and
sets RANK, WORLD_SIZE and LOCAL_RANK; ``DistContext.from_env`` reads them. The default context is
one process and every method is a no-op, so the training loop has a single code path.

Data parallelism here is deliberately manual rather than ``DistributedDataParallel``: our forward
calls the decoder directly (shared prefix, logits only where there is a label), which DDP's
wrapper would never see, and LoRA's few trainable parameters make one flat all-reduce per step
cheap. FSDP and ZeRO-3 (``mode`` fsdp / zero3) shard the frozen base too; there accelerate owns the
model and the optimizer, and the loop takes the plain ``model(...)`` forward so the sharding hooks
run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

MODES = ("none", "ddp", "fsdp", "zero3")
SHARDED_MODES = ("fsdp", "zero3")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    mode: str = "none"
    accelerator: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls, mode: str = "ddp", grad_accum: int = 1) -> "DistContext":
        ctx = cls(
            rank=_env_int("RANK", 0), world_size=_env_int("WORLD_SIZE", 1), local_rank=_env_int("LOCAL_RANK", 0),
            local_world_size=_env_int("LOCAL_WORLD_SIZE", 1), mode=mode,
        )
        if mode in SHARDED_MODES:
            from accelerate import Accelerator

            # accelerate reads the FSDP / DeepSpeed settings its launcher exported and sets up the group.
            # DeepSpeed decides itself when a step ends, so it must count micro-batches as we do;
            # under FSDP a count above 1 would make accelerate divide our already normalised loss.
            ctx.accelerator = Accelerator(gradient_accumulation_steps=grad_accum if mode == "zero3" else 1)
        elif ctx.world_size > 1 and not torch.distributed.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(ctx.local_rank)
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return ctx

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.mode in SHARDED_MODES

    @property
    def device(self) -> torch.device:
        if self.accelerator is not None:
            return self.accelerator.device
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    def threads(self, requested: int | None) -> int:
        # Workers on one machine share its cores; each taking all of them oversubscribes the CPU.
        return requested or max(1, (os.cpu_count() or 1) // self.local_world_size)

    # --- splitting a step's work ------------------------------------------------------------

    def share(self, micro_batch: Sequence[int]) -> list[int]:
        """This rank's rows of one micro-batch.

        Rows, not whole micro-batches, are dealt out, so every rank runs the same number of
        forwards (sharded modes need that: each forward gathers weights collectively) and the
        recipe's batch_size stays the global batch. Batches are length-sorted, so striding gives
        every rank a similar token count.
        """
        return list(micro_batch[self.rank :: self.world_size])

    # --- combining results ------------------------------------------------------------------

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def all_reduce_sum(self, *values: float) -> list[float]:
        if self.world_size == 1:
            return list(values)
        # float64 so token counts stay exact integers and loss sums lose nothing on the way.
        buffer = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(buffer)
        return buffer.tolist()

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum trainable gradients over ranks in one flat buffer (sharded modes reduce their own)."""
        if self.world_size == 1 or self.sharded:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        offset = 0
        for param in params:
            n = param.numel()
            param.grad = flat[offset : offset + n].view_as(param)
            offset += n

    def gather_rng_states(self) -> list[torch.Tensor]:
        """Every rank's CPU generator state, so a resumed run replays each rank's dropout exactly."""
        state = torch.get_rng_state()
        if self.world_size == 1:
            return [state]
        states: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(states, state)
        return states

    # --- the sharded modes' model handling, delegated to accelerate --------------------------

    def prepare(self, model, optimizer):
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model):
        return self.accelerator.unwrap_model(model) if self.accelerator is not None else model

    @property
    def loss_scale(self) -> float:
        # Our loss is already a global sum / global label count; FSDP and DeepSpeed average
        # gradients over ranks (DeepSpeed also over its accumulation steps), which we undo.
        if self.mode == "fsdp":
            return float(self.world_size)
        if self.mode == "zero3":
            return float(self.world_size * self.accelerator.gradient_accumulation_steps)
        return 1.0

    def backward(self, loss: torch.Tensor, model) -> None:
        if self.accelerator is None:
            loss.backward()
        elif self.mode == "zero3":
            # accumulate() marks every grad_accum-th backward as the step boundary DeepSpeed steps at.
            with self.accelerator.accumulate(model):
                self.accelerator.backward(loss * self.loss_scale)
        else:
            self.accelerator.backward(loss * self.loss_scale)

    def clip_grad_norm(self, model, params: Sequence[torch.nn.Parameter], max_norm: float) -> None:
        if self.mode == "zero3":
            return  # DeepSpeed clips inside its step (gradient_clipping in the generated config)
        if self.accelerator is not None:
            self.accelerator.clip_grad_norm_(model.parameters(), max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(params, max_norm)

    def close(self) -> None:
        if self.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()  # no rank tears gloo down while a peer still talks to it
            torch.distributed.destroy_process_group()
