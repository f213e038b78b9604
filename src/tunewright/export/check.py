"""Parity check: the exported files must answer like the adapter itself, before anyone ships them.

The reference is the adapter loaded on its base through plain peft, unmerged: what training
produced. Each export is loaded back from disk the way its consumers load it (the merged folder
with plain ``transformers``, the GGUF with transformers' GGUF reader, tokenizer and all), then
asked the same probe conversations greedily.

Verdict: every format's greedy text (and the token ids behind it) equals the reference's, every probe the reference ends at its
end-of-turn token also ends there in every format, each format's own tokenizer and chat template
give the reference's prompt tokens, and the largest logit difference stays within its threshold.
The logit threshold matters on its own: a small model can produce the same few greedy tokens from
subtly wrong weights (an unpermuted q/k still attends almost like the right one).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from ..models.loading import BaseModelInfo
from ..reports import CHECK_REPORT, CheckReport, FormatCheck

DEFAULT_PROBES: tuple[list[dict], ...] = (
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Give me one tip for sleeping better."}],
    [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": "Why is the sky blue?"}],
)

# Largest absolute logit difference accepted against the reference, as a fraction of the reference's
# largest absolute logit, so the bar scales with the model. F32 files hold the merged weights bit
# for bit; what remains is merged-vs-unmerged rounding. F16 rounds every weight to 11 significant
# bits. Measured on SmolLM2-135M with a LoRA: F32 1.2e-4 at logits of about 40 (3e-6 relative),
# F16 0.053 (1.3e-3 relative); the same GGUF with q/k left unpermuted: 41.
RELATIVE_THRESHOLDS = {"f32": 1e-4, "f16": 3e-2}


def _load_reference(base: BaseModelInfo, adapter_path: Path | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base.folder, dtype=torch.float32, local_files_only=True)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    return model.eval(), AutoTokenizer.from_pretrained(base.folder, local_files_only=True)


def _load_merged(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval(), \
        AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _load_gguf(path: Path):
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .gguf_writer import apply_rope_factors, llama_cpp_reading

    # Both readings below come from one parse of the file's header and tensor index.
    reader = GGUFReader(str(path))
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    llama_cpp_reading(config, reader)  # what llama.cpp reads from the file and transformers' reader drops
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config,
                                                 dtype=torch.float32, local_files_only=True)
    apply_rope_factors(model, reader)  # Llama 3.x scaling: read from the file as llama.cpp reads it
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)


def _prompt_ids(tokenizer, messages) -> list[int]:
    # Rendered then encoded without added specials, as evaluation does (generation.py).
    from ..models.chat import encode_prompt

    return encode_prompt(tokenizer, messages)


@torch.inference_mode()
def _answer(model, tokenizer, messages, *, max_new_tokens: int, stop_ids: list[int]) -> dict:
    from ..models.generation import generate_ids

    prompt = _prompt_ids(tokenizer, messages)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    new = generate_ids(model, [prompt], max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad=pad)[0]
    stopped = any(token in stop_ids for token in new)
    return {"prompt_ids": prompt, "new_ids": new, "stopped_at_eos": stopped,
            "text": tokenizer.decode(new, skip_special_tokens=True).strip()}


@torch.inference_mode()
def _logits(model, ids: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([ids])).logits[0].float()


def _stop_ids(tokenizer, model) -> list[int]:
    from ..models.stops import stop_token_ids

    return stop_token_ids(tokenizer, getattr(model, "generation_config", None))


def _stop_ids_from_config(model) -> list[int]:
    value = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return [value] if isinstance(value, int) else list(value or [])


def run_check(base: BaseModelInfo, adapter_path: Path | None, *, merged_dir: Path | None = None,
              gguf_path: Path | None = None, gguf_dtype: str = "f32",
              probes: Sequence[list[dict]] | None = None, max_new_tokens: int = 32) -> CheckReport:
    """Compare the reference with each export given; a JSON-able report with ``passed``."""
    started = time.perf_counter()
    probes = [list(p) for p in (probes or DEFAULT_PROBES)]
    model, tokenizer = _load_reference(base, adapter_path)
    reference, teacher_ids, reference_logits = [], [], []
    stops = _stop_ids(tokenizer, model)
    for messages in probes:
        answer = _answer(model, tokenizer, messages, max_new_tokens=max_new_tokens, stop_ids=stops)
        # Teacher-forced over prompt + reference answer: every format sees the same token ids, so
        # logits compare position by position even where a format's own answer drifts.
        ids = answer["prompt_ids"] + answer["new_ids"]
        teacher_ids.append(ids)
        reference_logits.append(_logits(model, ids))
        reference.append(answer)
    del model

    thresholds = {"merged": RELATIVE_THRESHOLDS["f32"], "gguf": RELATIVE_THRESHOLDS[gguf_dtype]}
    loaders = {"merged": (merged_dir, _load_merged), "gguf": (gguf_path, _load_gguf)}
    formats: dict[str, FormatCheck] = {}
    failures: list[str] = []
    for fmt, (where, load) in loaders.items():
        if where is None:
            continue
        model, fmt_tokenizer = load(Path(where))
        # Each format stops where its own files say: the merged folder's generation config, the
        # GGUF's eos id; a missing end-of-turn token shows up as a probe that runs on.
        if fmt == "gguf":
            fmt_stops = [fmt_tokenizer.eos_token_id]
        else:
            fmt_stops = list(_stop_ids_from_config(model) or [fmt_tokenizer.eos_token_id])
        rows = []
        for i, messages in enumerate(probes):
            answer = _answer(model, fmt_tokenizer, messages, max_new_tokens=max_new_tokens, stop_ids=fmt_stops)
            logits = _logits(model, teacher_ids[i])
            same_shape = logits.shape == reference_logits[i].shape  # a lost or padded vocab row breaks it
            diff = float((logits - reference_logits[i]).abs().max()) if same_shape else None
            scale = float(reference_logits[i].abs().max())
            rows.append({
                "text": answer["text"],
                "token_ids": answer["new_ids"],
                "stopped_at_eos": answer["stopped_at_eos"],
                "new_tokens": len(answer["new_ids"]),
                "prompt_tokens_match": answer["prompt_ids"] == reference[i]["prompt_ids"],
                "max_logit_diff": diff,
                "logit_scale": scale,
            })
        del model
        report = judge_format(fmt, rows, reference, thresholds[fmt], failures)
        formats[fmt] = report

    return CheckReport(
        format=CHECK_REPORT.version,
        passed=not failures,
        failures=failures,
        reference="adapter on base via peft (unmerged)" if adapter_path is not None else "base model",
        gguf_dtype=gguf_dtype if gguf_path is not None else None,
        max_new_tokens=max_new_tokens,
        # Per probe, the limit is this fraction of max(1, the reference's largest absolute logit).
        thresholds={fmt: {"relative_max_logit_diff": thresholds[fmt]} for fmt in formats},
        probes=probes,
        reference_outputs=[{"text": r["text"], "token_ids": r["new_ids"], "stopped_at_eos": r["stopped_at_eos"],
                            "new_tokens": len(r["new_ids"])} for r in reference],
        formats=formats,
        max_logit_diff={fmt: report["max_logit_diff"] for fmt, report in formats.items()},
        seconds=round(time.perf_counter() - started, 2),
    )


def judge_format(fmt: str, rows: list[dict], reference: list[dict], threshold: float, failures: list[str]) -> FormatCheck:
    for i, (row, ref) in enumerate(zip(rows, reference)):
        if row["text"] != ref["text"]:
            failures.append(f"{fmt}: probe {i} answered {row['text']!r}, the reference {ref['text']!r}")
        elif row["token_ids"] != ref["new_ids"]:
            # Same visible text from different tokens: special tokens differ, or the text was cut differently.
            failures.append(f"{fmt}: probe {i} generated different tokens than the reference (same visible text)")
        if ref["stopped_at_eos"] and not row["stopped_at_eos"]:
            failures.append(f"{fmt}: probe {i} did not stop at the end-of-turn token where the reference did")
        if not row["prompt_tokens_match"]:
            failures.append(f"{fmt}: probe {i} tokenizes to different prompt ids than the reference")
        limit = threshold * max(1.0, row["logit_scale"])
        row["max_logit_diff_limit"] = limit
        row["within_threshold"] = row["max_logit_diff"] is not None and row["max_logit_diff"] <= limit
        if row["max_logit_diff"] is None:
            failures.append(f"{fmt}: probe {i} logits have a different vocabulary size than the reference")
        elif not row["within_threshold"]:
            failures.append(f"{fmt}: probe {i} max logit difference {row['max_logit_diff']:.3g} above {limit:.3g}")
    diffs = [r["max_logit_diff"] for r in rows]
    return FormatCheck(
        passed=not any(f.startswith(f"{fmt}:") for f in failures),
        texts_match=all(r["text"] == ref["text"] for r, ref in zip(rows, reference)),
        tokens_match=all(r["token_ids"] == ref["new_ids"] for r, ref in zip(rows, reference)),
        eos_agrees=all(r["stopped_at_eos"] or not ref["stopped_at_eos"] for r, ref in zip(rows, reference)),
        prompt_tokens_match=all(r["prompt_tokens_match"] for r in rows),
        max_logit_diff=None if None in diffs else max(diffs),
        probes=rows,
    )
