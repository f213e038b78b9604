"""PEFT on a vision-language model: the parts the recipe names, loss on the assistant's text.

A loop of its own rather than ``loop._Recipe``: the text loop's speed comes from calling the
decoder directly (shared-prefix passes, packing, fused LoRA, logits only at labels), and each of
those assumes the batch is ids alone; a VLM must run its whole forward so the image features are
spliced into the embeddings. So this loop is the plain one, reusing what does not depend on that:
the method's peft config and optimizer groups, the step plan, the precision, and the standard
PEFT adapter layout written atomically. Checkpoint/resume and multi-process runs are not here yet.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import TrainSpec, VisionSpec
from ..data.batching import plan_micro_batches
from ..data.schema import ChatRow
from ..data.tokenize import IGNORE_INDEX
from ..data.vision import collate_vision, encode_vision_row
from ..errors import TunewrightError
from ..io import atomic_dir
from ..methods import check_method, parameter_counts
from ..models.vision import find_family, load_processor, load_vision_model, target_modules
from .loop import StepInfo, TrainResult
from .precision import training_precision


def vision_peft_config(model, folder: str | Path, spec: TrainSpec):
    """The method's peft config with ``target_modules`` over the recipe's parts."""
    method = check_method(spec)
    if not method.uses_lora_options:
        raise TunewrightError(f"vision-language models train with the LoRA family for now, not '{spec.method}'",
                              field="train.method")
    vision = spec.vision or VisionSpec()
    family = find_family(folder)
    layer_names = None if spec.target_modules == "all-linear" else list(spec.target_modules)
    config = method.peft_config(spec)
    config.target_modules = target_modules(model, family, vision.targets, layer_names)
    if vision.full:
        # peft matches modules_to_save by name suffix; a part's own module name is unique in the model.
        config.modules_to_save = [family.prefix(part).rsplit(".", 1)[-1] for part in vision.full]
    return method, config


def train_vision_adapter(*, folder: str | Path, rows: Sequence[ChatRow], media_folder: str | Path, spec: TrainSpec,
                         adapter_dir: Path, callbacks: Sequence[Callable[[StepInfo], None]] = ()) -> TrainResult:
    """Train on ``rows`` (images resolved against the dataset version ``media_folder``) and save the
    adapter to ``adapter_dir`` in standard PEFT layout."""
    from peft import get_peft_model
    from transformers import get_scheduler

    if not rows:
        raise TunewrightError("the training split is empty", field="train.dataset")
    find_family(folder)  # refuse a text model before anything loads
    torch.manual_seed(spec.seed)
    torch.set_num_threads(spec.threads or torch.get_num_threads())
    processor = load_processor(folder)
    encoded = [encode_vision_row(processor, row.messages, media_folder, spec.max_length) for row in rows]
    kept = [e for e in encoded if e.n_trainable]
    if not kept:
        raise TunewrightError("no row has an assistant turn to learn from", field="train.dataset")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = training_precision(spec.precision, device)
    base = load_vision_model(folder)
    method, config = vision_peft_config(base, folder, spec)
    model = get_peft_model(base, config).to(device)
    model.train()
    optimizer = torch.optim.AdamW(method.optimizer_groups(model, spec), lr=spec.learning_rate,
                                  weight_decay=spec.weight_decay)
    plan = plan_micro_batches([e.labels.shape[1] for e in kept], spec.batch_size, spec.epochs, spec.seed,
                              spec.max_steps, spec.grad_accum)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(spec.warmup_ratio * len(plan)),
                              num_training_steps=len(plan))
    trainable = [p for p in model.parameters() if p.requires_grad]
    pad_id = processor.tokenizer.pad_token_id
    losses, tokens, started = [], 0, time.perf_counter()
    for step, micro_batches in enumerate(plan, start=1):
        # Normalised by the step's labelled tokens, as the text loop does, so accumulation matches one batch.
        n_labels = sum(int((kept[i].labels[0, 1:] != IGNORE_INDEX).sum()) for mb in micro_batches for i in mb)
        step_loss = 0.0
        for micro_batch in micro_batches:
            batch = {k: v.to(device) for k, v in collate_vision([kept[i] for i in micro_batch], pad_id).items()}
            labels = batch.pop("labels")
            with precision.autocast():
                logits = model(**batch).logits[:, :-1]
                loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                         labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                                                         reduction="sum") / n_labels
            precision.scale(loss).backward()
            step_loss += loss.item()
            tokens += int(batch["attention_mask"].sum())
        precision.unscale(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, spec.max_grad_norm)
        precision.step(optimizer)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss)
        elapsed = time.perf_counter() - started
        info = StepInfo(step=step, total_steps=len(plan), loss=step_loss, learning_rate=scheduler.get_last_lr()[0],
                        tokens_seen=tokens, elapsed=elapsed, tokens_per_second=tokens / elapsed if elapsed else 0.0)
        for callback in callbacks:
            callback(info)
    with atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(tmp)
    elapsed = time.perf_counter() - started
    return TrainResult(adapter_dir=adapter_dir, steps=len(plan), losses=losses, tokens_seen=tokens,
                       train_seconds=elapsed, tokens_per_second=tokens / elapsed if elapsed else 0.0,
                       n_rows=len(kept), n_dropped=len(encoded) - len(kept),
                       extra={"precision": precision.name, "vision_targets": list((spec.vision or VisionSpec()).targets),
                              "vision_full": list((spec.vision or VisionSpec()).full),
                              **parameter_counts(model)})
