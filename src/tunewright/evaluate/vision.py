"""Held-out rows with images, asked of a vision-language base and its native adapter (``train.vision``).

The same scores, report and registry entries as a text adapter (``api.evaluate`` writes them); what
differs is how a row becomes the model's input: the model's own processor reads its images, so
each row is answered on its own (``models.generation.answer_inputs``). The forgetting check's
probes and the customer questions are text asked of text models, and are not run here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..data.api import load_split
from ..data.vision import prompt_inputs, require_image_rows
from ..errors import TunewrightError
from ..models.adapters import resolve_ref
from ..models.generation import answer_inputs
from ..models.vision import attach_vision_adapter, load_processor, load_vision_model
from .scoring import ModelScores, Scored, score_responses, spread


def score_vision(workspace, *, adapter: str, dataset: str | None, split: str, limit: int | None,
                 on_batch: Callable[[int], None] | None = None,
                 on_phase: Callable[[str, int], None] | None = None) -> Scored:
    spec = workspace.recipe.eval
    resolved = resolve_ref(adapter, base_model=workspace.recipe.base_model, registry=workspace.registry, vision=True)
    if resolved.adapter_path is None:
        raise TunewrightError("name the adapter to compare with the base model", field="adapter")
    dataset_record, rows = load_split(workspace, dataset, split, text_only=False)
    rows = spread(rows, limit)
    if not rows:
        raise TunewrightError(f"the {split} split of dataset '{dataset_record.name}' is empty")
    media = Path(dataset_record.path)
    require_image_rows(rows, media / f"{split}.jsonl")
    folder = resolved.base.folder
    processor = load_processor(folder)
    # Every prompt is read (images decoded, tokens counted) before the model loads: a bad image fails fast.
    prompts = [prompt_inputs(processor, row.messages, media) for row in rows]
    model = load_vision_model(folder)

    def run(ref: str, net) -> ModelScores:
        if on_phase:
            on_phase(ref, len(rows))
        started = time.perf_counter()
        answers = answer_inputs(net, processor.tokenizer, prompts, max_new_tokens=spec.max_new_tokens,
                                on_batch=on_batch)
        per_example, means = score_responses(rows, answers, spec.metrics)
        return ModelScores(ref, answers, per_example, means, time.perf_counter() - started)

    before = run("base", model)
    tuned = attach_vision_adapter(model, resolved.adapter_path)
    after = run(adapter, tuned)
    return Scored(resolved, dataset_record, rows, before, after)
