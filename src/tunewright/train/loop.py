"""The training recipe, top to bottom: set up, train, checkpoint, save.

Our own loop rather than ``transformers.Trainer`` because it is where the speed lives on a CPU:
length-grouped batches, the shared system prompt run once per batch (packed or cached), fused LoRA
projections, logits computed only where there is a label, gradient checkpointing only when the
memory plan needs it, the planner's precision by autocast (``precision.py``). ``benchmarks/`` compares it with the plain Trainer + peft stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import TrainSpec
from ..data.schema import ChatRow
from ..errors import TunewrightError
from ..io import atomic_dir
from ..models import BaseModelInfo, load_tokenizer
from ..data.batching import MIN_SHARED_PREFIX, plan_micro_batches, shared_prefix_length
from .checkpoint import (LoadedCheckpoint, TrainerState, latest_checkpoint, load_checkpoint, prune_checkpoints,
                         save_checkpoint)
from .distributed import DistContext
from .fused import fuse_lora_projections
from .neftune import EmbeddingNoise
from .distill import base_targets, batch_targets
from .losses import head_cross_entropy_sum, soft_cross_entropy_sum
from .packing import pack_after_prefix, packing_pays, supports_packing
from .precision import training_precision
from ..methods import check_method, get_method, parameter_counts
from .sharded import check_adapter_state, gather_trainable_state
from ..data.tokenize import IGNORE_INDEX, EncodedRow, collate, encode_chat

KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class StepInfo:
    step: int
    total_steps: int
    loss: float
    learning_rate: float
    tokens_seen: int
    elapsed: float  # seconds of training in this process
    tokens_per_second: float  # this process only, so a resumed run reports its real speed


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    losses: list[float]
    tokens_seen: int
    train_seconds: float
    tokens_per_second: float
    n_rows: int
    n_dropped: int
    resumed_from_step: int | None = None
    extra: dict = field(default_factory=dict)


def config_fingerprint(spec: TrainSpec, rows: Sequence[ChatRow], base: BaseModelInfo) -> str:
    """What must match for a checkpoint to be resumable: hyperparameters, data and base weights."""
    digest = hashlib.sha256()
    # Fields left unset are left out, so checkpoints written before they existed still resume.
    skip = {"checkpoint_every", "threads", *(name for name in ("vision", "neftune_alpha") if getattr(spec, name) is None)}
    digest.update(json.dumps(spec.model_dump(mode="json", exclude=skip), sort_keys=True).encode())
    for row in rows:
        digest.update(row.content_key().encode())
    digest.update(base.sha256.encode())
    return digest.hexdigest()


def _decoder_hidden(base, batch: dict[str, torch.Tensor], prefix_len: int,
                    packing: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Last hidden states and the labels they predict, sharing one pass over the common prefix.

    Every row starts with the same system prompt; running it once removes a third or more of the
    matrix multiplies on short chat rows. Two layouts do that: the batch packed into one sequence
    after the prefix (``packing.py``), or the padded batch with the prefix's key/value cache
    repeated per row. Gradients stay exact either way: autograd sums the shared prefix's gradients
    back into its one pass.
    """
    decoder = base.get_decoder()
    input_ids, attention, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    if prefix_len < MIN_SHARED_PREFIX or input_ids.shape[0] == 1:
        hidden = decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return hidden[:, :-1], labels[:, 1:]
    lengths = attention.sum(dim=1).tolist()
    if (packing == "on" and supports_packing(base.config, lengths)) or (
            packing == "auto" and packing_pays(base.config, lengths, prefix_len)):
        packed = pack_after_prefix(batch, prefix_len, dtype=base.get_input_embeddings().weight.dtype)
        hidden = decoder(input_ids=packed.input_ids, position_ids=packed.position_ids,
                         attention_mask=packed.attention_mask, use_cache=False).last_hidden_state
        return hidden, packed.targets
    from transformers import DynamicCache

    cache = DynamicCache(config=decoder.config)
    decoder(input_ids=input_ids[:1, :prefix_len], cache=cache, use_cache=True)
    cache.batch_repeat_interleave(input_ids.shape[0])
    hidden = decoder(
        input_ids=input_ids[:, prefix_len:], attention_mask=attention, cache=cache, use_cache=True
    ).last_hidden_state
    return hidden[:, :-1], labels[:, prefix_len + 1 :]


def supervised_loss_sum(model, batch: dict[str, torch.Tensor], prefix_len: int = 0, full_forward: bool = False,
                        packing: str = "auto") -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions only.

    Projecting every position onto a 49k-word vocabulary costs as much as several decoder layers;
    only assistant tokens carry a label, so only their hidden states go through the output head,
    in chunks whose logits never outlive the chunk (``losses.head_cross_entropy_sum``).
    Models whose PEFT method changes the inputs (prompt learning) take the plain full-logits path,
    and so do sharded models (``full_forward``): FSDP gathers weights in the wrapped model's own
    forward, which calling the decoder directly would skip. A batch holding ``target_ids`` and
    ``target_probs`` (``distill.batch_targets``) trains on those distributions instead of its labels.
    """
    soft_ids, soft_probs = batch.get("target_ids"), batch.get("target_probs")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    prompt_learning = getattr(model, "active_peft_config", None) is not None and model.active_peft_config.is_prompt_learning
    if full_forward or prompt_learning:
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        n_virtual = logits.shape[1] - batch["input_ids"].shape[1]
        logits = logits[:, n_virtual:-1]
        return soft_cross_entropy_sum(logits[mask], _targets(labels[mask], soft_ids), soft_probs)
    hidden, labels = _decoder_hidden(base, batch, prefix_len, packing)
    mask = labels != IGNORE_INDEX
    targets = _targets(labels[mask], soft_ids)
    head = base.get_output_embeddings()
    cap = getattr(base.config, "final_logit_softcapping", None)  # Gemma 2: the model's own forward caps its logits
    if type(head) is torch.nn.Linear and head.bias is None and not cap:
        return head_cross_entropy_sum(hidden[mask], head.weight, targets, probs=soft_probs)
    logits = head(hidden[mask])  # e.g. a LoRA on lm_head, or capped logits
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return soft_cross_entropy_sum(logits, targets, soft_probs)


def _targets(labels: torch.Tensor, soft_ids: torch.Tensor | None) -> torch.Tensor:
    if soft_ids is None:
        return labels
    if soft_ids.shape[0] != labels.shape[0]:  # a layout that reorders or drops positions would misalign
        raise TunewrightError(f"{soft_ids.shape[0]} target distributions for {labels.shape[0]} labelled positions")
    return soft_ids


def _encode_all(tokenizer, rows: Sequence[ChatRow], max_length: int) -> tuple[list[EncodedRow], int, list[int]]:
    """The encoded rows, how many were dropped, and the encoded indices of replay rows."""
    encoded, dropped, replay = [], 0, []
    for row in rows:
        item = encode_chat(tokenizer, [m.model_dump() for m in row.messages], max_length,
                           open_end=bool(row.meta.get("open_end")))
        if item.n_trainable == 0:
            dropped += 1  # truncation cut every assistant token: nothing to learn from
            continue
        if row.meta.get("replay"):
            replay.append(len(encoded))
        encoded.append(item)
    return encoded, dropped, replay


def _checkpoint_weights(dist: DistContext, model, shapes: dict[str, tuple]) -> dict[str, torch.Tensor] | None:
    """Every trainable parameter under its module name, on the main rank (None elsewhere).

    Not the adapter file's contents: for P-tuning and prefix-tuning with a projection, PEFT saves
    the encoder's *output* (all inference needs), so resuming from it would lose the encoder that
    training updates. The checkpoint keeps what the optimizer steps; the adapter is still checked.
    """
    from peft import get_peft_model_state_dict

    unwrapped = dist.unwrap(model) if dist.sharded else model
    weights = gather_trainable_state(model, is_main=dist.is_main, unwrapped=unwrapped if dist.sharded else None)
    if weights is None:
        return None
    if not dist.sharded:
        check_adapter_state(get_peft_model_state_dict(model), shapes)
    else:
        check_adapter_state(get_peft_model_state_dict(unwrapped, state_dict=weights), shapes)
    return weights


def _restore_weights(model, weights: dict[str, torch.Tensor], checkpoint: Path) -> None:
    expected = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise TunewrightError(
            f"the checkpoint's weights do not fit this model (missing {missing[:2]}, unexpected {extra[:2]}); "
            "start a fresh run", file=checkpoint,
        )
    with torch.no_grad():
        model.load_state_dict(weights, strict=False)


def _optimizer_state(dist: DistContext, model, optimizer) -> dict | None:
    if dist.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        # LoRA's moments are small: gathered whole onto rank 0, they save like a plain optimizer's.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, optimizer.optimizer, options=options)
    if dist.mode == "zero3":
        return None  # DeepSpeed keeps AdamW's moments in its own partitioned buffers
    return optimizer.state_dict() if dist.is_main else None


def _load_optimizer_state(dist: DistContext, model, optimizer, saved: dict | None) -> bool:
    if saved is None or dist.mode == "zero3":
        return False
    if dist.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer.optimizer, saved, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(saved)
    return True


def train_adapter(
    *,
    base: BaseModelInfo,
    rows: Sequence[ChatRow],
    spec: TrainSpec,
    run_dir: Path,
    adapter_dir: Path,
    resume: bool = False,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    dist: DistContext | None = None,
) -> TrainResult:
    """Train and save the adapter. Under a launcher every rank runs this with its ``dist``; each
    step's rows are dealt out over the ranks and their gradients summed, so the result is the
    single-process one up to the order of floating-point sums."""
    recipe = _Recipe(base, rows, spec, run_dir, dist or DistContext())
    recipe.setup_data()
    recipe.setup_model()
    recipe.setup_optimizer()
    if resume:
        recipe.resume_from_checkpoint()
    recipe.distribute()
    recipe.train(callbacks)
    return recipe.finish(adapter_dir)


class _Recipe:
    """One run of ``train_adapter``, split the way torchtune splits a recipe: one method per stage.

    The stages must run in ``train_adapter``'s order, which is part of the result: the seed is set
    before the adapter's first weights are drawn, and a resumed run restores the random state
    only after setup has drawn from it, so its dropout masks are the uninterrupted run's.
    """

    def __init__(self, base: BaseModelInfo, rows: Sequence[ChatRow], spec: TrainSpec, run_dir: Path,
                 dist: DistContext) -> None:
        self.base, self.rows, self.spec, self.dist = base, rows, spec, dist
        self.checkpoints = run_dir / "checkpoints"
        self.resumed_from: int | None = None
        self.loaded: LoadedCheckpoint | None = None

    def setup_data(self) -> None:
        """The seed, the PEFT method and the encoded rows; refuses a split with nothing to train on."""
        spec = self.spec
        if not self.rows:
            raise TunewrightError("the training split is empty", field="train.dataset")
        torch.set_num_threads(self.dist.threads(spec.threads))
        torch.manual_seed(spec.seed)
        self.method = get_method(spec.method)
        self.tokenizer = load_tokenizer(self.base)
        self.encoded, self.dropped, self.replay_indices = _encode_all(self.tokenizer, self.rows, spec.max_length)
        if not self.encoded:
            raise TunewrightError(f"every row is longer than max_length={spec.max_length} tokens", field="train.max_length")

    def setup_model(self) -> None:
        """The base loaded and checked, replay targets taken from it, then the adapter wrapped and placed."""
        from peft import get_peft_model_state_dict

        spec, dist = self.spec, self.dist
        self.device = dist.device
        base_model = self.method.load_base(self.base, spec)
        check_method(spec, base_model)  # options that cannot work fail here, before any training step
        self.precision = training_precision(spec.precision, self.device, sharded=dist.sharded)
        self.distill_k = spec.replay.top_k if spec.replay is not None and spec.replay.loss == "kl" else None
        self.soft = self._replay_targets(base_model)
        model = self.method.wrap(base_model, spec)
        if spec.gradient_checkpointing:
            # Recomputing activations in backward trades about a third more compute for memory; the
            # planner turns it on only when the run would not fit otherwise.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        if not dist.sharded:
            model.to(self.device)  # sharded: accelerate places each rank's shard, never the whole model
        model.train()
        # After placement: moving a model re-creates its tensors, which would undo the shared views.
        # The sharded modes let accelerate run forwards outside our autocast region: weights stay fp32 there.
        self.stored = 0 if dist.sharded else self.precision.store_frozen_weights(model)
        self.fused = (fuse_lora_projections(model, autocast=self.precision.name != "fp32")
                      if spec.fuse_lora and not dist.sharded else None)
        # Taken before sharding leaves each rank holding pieces.
        self.counts = parameter_counts(model)
        self.noise = EmbeddingNoise(model, spec.neftune_alpha) if spec.neftune_alpha else None
        self.adapter_shapes = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items()}
        self.model = model

    def _replay_targets(self, base_model) -> dict:
        """The bare base's top-k distributions for replay rows under ``replay.loss: kl``, by row index."""
        if not (self.distill_k and self.replay_indices):
            return {}
        sharded, device = self.dist.sharded, self.device
        # From the bare base, before any adapter exists; where the model will train when it fits.
        return base_targets(base_model if sharded else base_model.to(device), self.encoded, self.replay_indices,
                            self.distill_k, device if not sharded else torch.device("cpu"), self.precision.autocast)

    def setup_optimizer(self) -> None:
        """AdamW, the step plan, the linear schedule over it, and the state a fresh run starts from."""
        from transformers import get_scheduler

        spec = self.spec
        self.optimizer = torch.optim.AdamW(self.method.optimizer_groups(self.model, spec), lr=spec.learning_rate,
                                           weight_decay=spec.weight_decay)
        self.plan = plan_micro_batches(
            [len(e.input_ids) for e in self.encoded], spec.batch_size, spec.epochs, spec.seed, spec.max_steps, spec.grad_accum
        )
        self.total_steps = len(self.plan)
        self.scheduler = get_scheduler(
            "linear", self.optimizer, num_warmup_steps=round(spec.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        fingerprint = config_fingerprint(spec, self.rows, self.base)
        self.state = TrainerState(step=0, tokens_seen=0, losses=[], scheduler={}, config_sha256=fingerprint)

    def resume_from_checkpoint(self) -> None:
        """Weights, schedule, random state and counters from this run's latest checkpoint.

        The optimizer's moments wait for ``distribute``: under FSDP they load into the wrapped model.
        """
        last = latest_checkpoint(self.checkpoints)
        if last is None:
            raise TunewrightError("no checkpoint to resume from", file=self.checkpoints)
        loaded = load_checkpoint(last)
        if loaded.state.config_sha256 != self.state.config_sha256:
            raise TunewrightError(
                "the checkpoint was made with different data, base model or settings; start a fresh run", file=last
            )
        _restore_weights(self.model, loaded.trainable_state, last)
        self.scheduler.load_state_dict(loaded.state.scheduler)
        torch.set_rng_state(loaded.rng_state(self.dist.rank))
        self.state, self.loaded = loaded.state, loaded
        self.resumed_from = self.state.step

    def distribute(self) -> None:
        """Model and optimizer wrapped for the launcher's mode (DDP, FSDP, ZeRO-3 or none)."""
        dist = self.dist
        self.model, self.optimizer = dist.prepare(self.model, self.optimizer)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.extra: dict = {"precision": self.precision.name}
        if self.stored:
            self.extra["frozen_weights_stored_in"] = self.precision.name
        if self.soft:
            self.extra["replay_kl_rows"] = len(self.soft)
        if self.precision.reason:
            self.extra["precision_note"] = self.precision.reason
        if self.loaded is not None and not _load_optimizer_state(dist, self.model, self.optimizer,
                                                                 self.loaded.optimizer_state):
            self.extra["optimizer_state_restored"] = False  # ZeRO-3: AdamW's moments restart from zero

    def train(self, callbacks: Sequence[Callable[[StepInfo], None]]) -> None:
        """The remaining steps, a checkpoint every ``checkpoint_every`` of them but the last."""
        spec, state = self.spec, self.state
        self.pad_id = self.tokenizer.pad_token_id
        # The shared-prefix pass reuses a key/value cache, which checkpointed layers do not keep.
        self.prefix_len = shared_prefix_length(self.encoded) if spec.share_prefix and not spec.gradient_checkpointing else 0
        # Every rank knows every row's label count, so a step's normaliser needs no communication.
        self.label_counts = [sum(1 for label in e.labels[1:] if label != IGNORE_INDEX) for e in self.encoded]
        self.started = time.perf_counter()
        self.tokens_this_process = 0
        for step_index in range(state.step, self.total_steps):
            step_loss, step_tokens = self.train_step(self.plan[step_index])
            state.step = step_index + 1
            state.tokens_seen += int(step_tokens)
            self.tokens_this_process += int(step_tokens)
            state.losses.append(step_loss)
            info = self._step_info(step_loss)
            if state.step % spec.checkpoint_every == 0 and state.step < self.total_steps:
                self.save_checkpoint()
            for callback in callbacks:
                callback(info)

    def train_step(self, micro_batches: list[list[int]]) -> tuple[float, float]:
        """One optimizer step over a step's micro-batches: its loss and tokens, summed over ranks."""
        dist = self.dist
        # Normalise by the labelled-token count of the whole step, over all ranks' rows, so gradient
        # accumulation and data parallelism both match one big batch.
        n_labels = sum(self.label_counts[i] for mb in micro_batches for i in mb)
        step_loss, step_tokens = 0.0, 0
        for micro_batch in micro_batches:
            share = self._rows_for(micro_batch)
            if share is None:
                continue
            loss, tokens = self._forward_backward(*share, n_labels)
            step_loss += loss
            step_tokens += tokens
        step_loss, step_tokens = dist.all_reduce_sum(step_loss, step_tokens)
        dist.all_reduce_grads(self.trainable)
        self.precision.unscale(self.optimizer)
        dist.clip_grad_norm(self.model, self.trainable, self.spec.max_grad_norm)
        self.precision.step(self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss, step_tokens

    def _rows_for(self, micro_batch: list[int]) -> tuple[list[int], int] | None:
        """This rank's rows of a micro-batch and their weight; None when it has nothing to run."""
        rows_here = self.dist.share(micro_batch)
        if rows_here:
            return rows_here, 1
        if not self.dist.sharded:
            return None
        # A sharded forward is collective: a rank without rows still runs one, weighted zero.
        return list(micro_batch[:1]), 0

    def _forward_backward(self, rows_here: list[int], weight: int, n_labels: int) -> tuple[float, int]:
        """Loss and backward for one micro-batch; its share of the step's loss, and its tokens."""
        spec, encoded = self.spec, self.encoded
        batch = collate([encoded[i] for i in rows_here], self.pad_id)
        if any(i in self.soft for i in rows_here):
            batch.update(batch_targets([encoded[i] for i in rows_here], [self.soft.get(i) for i in rows_here],
                                       self.distill_k, spec.replay.weight))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.noise is not None:
            self.noise.set_rows(batch["attention_mask"])
        with self.precision.autocast():
            loss = supervised_loss_sum(self.model, batch, self.prefix_len, full_forward=self.dist.sharded,
                                       packing=spec.packing) / n_labels
        if not weight:
            loss = loss * 0.0
        self.dist.backward(self.precision.scale(loss), self.model)
        return loss.item(), int(batch["attention_mask"].sum()) * weight

    def _step_info(self, step_loss: float) -> StepInfo:
        elapsed = time.perf_counter() - self.started
        return StepInfo(
            step=self.state.step,
            total_steps=self.total_steps,
            loss=step_loss,
            learning_rate=self.scheduler.get_last_lr()[0],
            tokens_seen=self.state.tokens_seen,
            elapsed=elapsed,
            tokens_per_second=self.tokens_this_process / elapsed if elapsed > 0 else 0.0,
        )

    def save_checkpoint(self) -> None:
        """Every rank takes part (gathering is collective when sharded); rank 0 writes."""
        dist = self.dist
        self.state.scheduler = self.scheduler.state_dict()
        trainable_state = _checkpoint_weights(dist, self.model, self.adapter_shapes)
        optimizer_state = _optimizer_state(dist, self.model, self.optimizer)
        rng_states = dist.gather_rng_states()
        if dist.is_main:
            save_checkpoint(self.checkpoints, trainable_state=trainable_state, optimizer_state=optimizer_state,
                            state=self.state, rng_states=rng_states)
            prune_checkpoints(self.checkpoints, KEEP_CHECKPOINTS)
        dist.barrier()

    def finish(self, adapter_dir: Path) -> TrainResult:
        """Unfuse, save the adapter, and report."""
        elapsed = time.perf_counter() - self.started
        if self.fused is not None:
            self.extra["fused_lora_modules"] = self.fused.fused_modules
            self.fused.remove()
        if self.noise is not None:
            self.noise.remove()
            self.extra["neftune_alpha"] = self.spec.neftune_alpha
        _save_adapter(self.dist, self.model, adapter_dir, self.adapter_shapes)
        return TrainResult(
            adapter_dir=adapter_dir,
            steps=self.total_steps,
            losses=list(self.state.losses),
            tokens_seen=self.state.tokens_seen,
            train_seconds=elapsed,
            tokens_per_second=self.tokens_this_process / elapsed if elapsed > 0 else 0.0,
            n_rows=len(self.encoded),
            n_dropped=self.dropped,
            resumed_from_step=self.resumed_from,
            extra={"shared_prefix_tokens": self.prefix_len, **self.counts, "processes": self.dist.world_size,
                   **self.extra},
        )


def _save_adapter(dist: DistContext, model, adapter_dir: Path, shapes: dict[str, tuple]) -> None:
    """Rank 0 writes the adapter in standard PEFT layout; the other ranks wait until it is there."""
    weights = _checkpoint_weights(dist, model, shapes)  # collective when sharded; refuses an empty adapter
    if dist.is_main:
        with atomic_dir(adapter_dir) as tmp:
            if dist.sharded:
                dist.unwrap(model).save_pretrained(tmp, state_dict=weights)
            else:
                model.save_pretrained(tmp)
    dist.barrier()
