"""`tunewright export` for a native vision-language adapter (``train.vision``): the merged model folder.

The adapter is merged into its vision-language base and saved with the base's own processor files
(tokenizer, image processor, chat template) beside the weights, so plain ``transformers`` loads it as
it loads the base, and so does an engine that reads Hugging Face folders. GGUF, Ollama and the vLLM
multi-LoRA layout are written for text models only: asked for here, they are refused naming
``formats``.

``--check`` asks the adapter on its base (plain peft, unmerged) and the merged folder, reloaded from
disk with its own processor, the held-out rows with their images: the same prompt tokens, the same
greedy answers, the same stop, and logits over the prompt (images included) within the F32 threshold
of the text check. The text check also compares logits over each reference answer, teacher-forced;
here an answer may hold the image placeholder token (an untrained model says anything), which the
model would then demand image features for, so the greedy tokens stand for the answer's positions.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import torch

from ..errors import TunewrightError
from ..io import atomic_dir, atomic_write_json
from ..models.adapters import ResolvedRef
from ..reports import CHECK_REPORT, CheckReport
from .api import ExportResult, check_mergeable, check_target
from .check import RELATIVE_THRESHOLDS, judge_format
from .merged import merged_model, save_merged

FORMATS = ("merged",)
# What the base folder holds besides its processor: weights and configs, which the merged model
# writes anew. Everything else (tokenizer, image processor, chat template) is copied as it is, so the
# merged folder reads images and renders prompts exactly as its base.
_NOT_COPIED = {"config.json", "generation_config.json", "model.safetensors.index.json"}
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack"}


def check_formats(formats: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(formats))
    if not wanted:
        raise TunewrightError(f"no export format asked for (a vision-language adapter exports as: {', '.join(FORMATS)})",
                              field="formats")
    other = [f for f in wanted if f not in FORMATS]
    if other:
        raise TunewrightError(f"'{other[0]}' is a text-model export; a vision-language adapter exports as "
                              f"{', '.join(FORMATS)} (a folder transformers and vLLM load)", field="formats")
    return wanted


def write_merged(resolved: ResolvedRef, folder: Path) -> Path:
    from ..models.vision import load_processor, load_vision_model

    processor = load_processor(resolved.base.folder)  # refuses a folder without a usable processor first
    model = merged_model(resolved.base, resolved.adapter_path, load=lambda base: load_vision_model(base.folder))
    save_merged(model, processor.tokenizer, folder)
    for item in sorted(Path(resolved.base.folder).iterdir()):
        if item.is_file() and item.name not in _NOT_COPIED and item.suffix not in _WEIGHT_SUFFIXES:
            shutil.copy2(item, folder / item.name)
    return folder


def export_vision(resolved: ResolvedRef, out_dir: Path, *, name: str, formats: Sequence[str], check: bool,
                  rows: Sequence | None, media, max_new_tokens: int) -> ExportResult:
    """The merged folder in ``out_dir`` (new or empty), checked against the adapter when asked on
    ``rows`` (``data.schema.ChatRow``s with their images in ``media``)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_mergeable(resolved.adapter_path, check_formats(formats))
    check_target(out_dir, name)
    if check and not rows:  # before minutes of merging
        raise TunewrightError("the check asks the dataset's held-out rows with their images, and there are none; "
                              "export without --check, or register a dataset with an eval split", field="check")
    report = None
    with atomic_dir(out_dir) as tmp:
        merged = write_merged(resolved, tmp / "merged")
        if check:
            report = run_vision_check(resolved, merged, rows, media, max_new_tokens=max_new_tokens)
            atomic_write_json(tmp / "check.json", report)
        atomic_write_json(tmp / "export.json", {
            "name": name, "base_ref": resolved.base.ref, "base_sha256": resolved.base.sha256,
            "adapter": str(resolved.adapter_path) if resolved.adapter_path else None, "formats": list(FORMATS),
            "files": {"merged": "merged"}, "check_passed": report["passed"] if report else None})
    return ExportResult(out_dir=out_dir, files={"merged": out_dir / "merged"}, check=report,
                        passed=report["passed"] if report is not None else True,
                        seconds=round(time.perf_counter() - started, 2))


@torch.inference_mode()
def _answers(model, processor, prompts: list[dict], max_new_tokens: int, stops: list[int]) -> list[dict]:
    from ..models.generation import answer_ids

    out = []
    for inputs in prompts:
        new = answer_ids(model, processor.tokenizer, inputs, max_new_tokens=max_new_tokens, stop_ids=stops)
        out.append({"prompt_ids": inputs["input_ids"][0].tolist(), "new_ids": new,
                    "stopped_at_eos": any(t in stops for t in new),
                    "text": processor.tokenizer.decode(new, skip_special_tokens=True).strip(),
                    "logits": model(**inputs).logits[0].float()})
    return out


def run_vision_check(resolved: ResolvedRef, merged: Path, rows: Sequence, media, *, max_new_tokens: int) -> CheckReport:
    from ..data.parts import content_text
    from ..data.vision import prompt_inputs
    from ..models.stops import stop_token_ids
    from ..models.vision import attach_vision_adapter, load_processor, load_vision_model

    started = time.perf_counter()
    processor = load_processor(resolved.base.folder)
    prompts = [prompt_inputs(processor, row.messages, media) for row in rows]
    model = load_vision_model(resolved.base.folder)
    if resolved.adapter_path is not None:
        model = attach_vision_adapter(model, resolved.adapter_path)
    stops = stop_token_ids(processor.tokenizer, getattr(model, "generation_config", None))
    reference = _answers(model, processor, prompts, max_new_tokens, stops)
    del model

    merged_processor = load_processor(merged)
    merged_prompts = [prompt_inputs(merged_processor, row.messages, media) for row in rows]
    merged_model = load_vision_model(merged)
    generation = merged_model.generation_config.eos_token_id  # the merged folder stops where its files say
    merged_stops = ([generation] if isinstance(generation, int) else list(generation or [])) or \
        [merged_processor.tokenizer.eos_token_id]
    rows_out = []
    for inputs, ref in zip(merged_prompts, reference):
        [answer] = _answers(merged_model, merged_processor, [inputs], max_new_tokens, merged_stops)
        same = answer["logits"].shape == ref["logits"].shape
        rows_out.append({"text": answer["text"], "token_ids": answer["new_ids"],
                         "stopped_at_eos": answer["stopped_at_eos"], "new_tokens": len(answer["new_ids"]),
                         "prompt_tokens_match": answer["prompt_ids"] == ref["prompt_ids"],
                         "max_logit_diff": float((answer["logits"] - ref["logits"]).abs().max()) if same else None,
                         "logit_scale": float(ref["logits"].abs().max())})
    failures: list[str] = []
    threshold = RELATIVE_THRESHOLDS["f32"]
    merged_report = judge_format("merged", rows_out, reference, threshold, failures)
    return CheckReport(
        format=CHECK_REPORT.version, passed=not failures, failures=failures,
        reference="adapter on base via peft (unmerged)" if resolved.adapter_path is not None else "base model",
        gguf_dtype=None, max_new_tokens=max_new_tokens,
        thresholds={"merged": {"relative_max_logit_diff": threshold}},
        probes=[[{"role": m.role, "content": content_text(m.content)} for m in row.messages[:-1]] for row in rows],
        reference_outputs=[{"text": r["text"], "token_ids": r["new_ids"], "stopped_at_eos": r["stopped_at_eos"],
                            "new_tokens": len(r["new_ids"])} for r in reference],
        formats={"merged": merged_report}, max_logit_diff={"merged": merged_report["max_logit_diff"]},
        seconds=round(time.perf_counter() - started, 2))
