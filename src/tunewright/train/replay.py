"""Replay: general requests answered by the base model itself, mixed into training against forgetting.

A LoRA adapter trained only on a few hundred shop answers drifts on everything else (the demo lost a
third of the easy facts the base model knew). Mixing in a small share of general requests whose
targets are the *base model's own* greedy answers (self-distillation, so no outside teacher and no
labels) anchors the adapter to the base's behaviour away from the task; a few percent of general
data is reported to prevent most forgetting (arXiv 2502.06042).

The prompts must be disjoint from the sets that measure forgetting, or the measurement would reward
memorising them: every prompt is checked against the workspace's KL prompts and retention probes
(exact text and any shared word 5-gram) and an overlap is refused naming the line. The answers are
generated once per (base weights, prompts, settings) and cached in the workspace, so a resumed or
repeated run trains on the same rows.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..data.schema import ChatRow
from ..errors import TunewrightError
from ..io import atomic_write_jsonl, sha256_file, sha256_text

SHIPPED_PROMPTS = "replay_prompts.jsonl"
NGRAM = 5


@dataclass(frozen=True)
class ReplayRows:
    rows: list[ChatRow]
    record: dict  # what the run config keeps: file, hashes, counts


def shipped_prompts() -> Path:
    from importlib import resources

    return Path(str(resources.files(__package__).joinpath("data", SHIPPED_PROMPTS)))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(text: str) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def check_disjoint(prompts: Sequence, path: Path, measured: dict[str, Sequence[str]]) -> None:
    """Refuse a replay prompt that repeats, or shares a word 5-gram with, a text that measures forgetting.

    ``prompts``: loaded rows with ``.prompt``, in file order (line = index + 1); ``measured``: a
    label ("retention probes") -> its texts."""
    for label, texts in measured.items():
        exact = {" ".join(_words(t)) for t in texts}
        grams = set().union(*(_ngrams(t) for t in texts)) if texts else set()
        for line, item in enumerate(prompts, start=1):
            if " ".join(_words(item.prompt)) in exact or _ngrams(item.prompt) & grams:
                raise TunewrightError(f"replay prompt overlaps the {label} that measure forgetting: "
                                      f"'{item.prompt[:80]}'", file=path, line=line, field="prompt")


def _cache_key(base_sha: str, prompts_sha: str, spec, precision: str) -> str:
    settings = {"n": spec.rows, "seed": spec.seed, "max_new_tokens": spec.max_new_tokens}
    if precision != "fp32":  # only then: caches written in fp32 keep their key
        settings["precision"] = precision
    settings = json.dumps(settings, sort_keys=True)
    return sha256_text(f"{base_sha}\n{prompts_sha}\n{settings}")[:20]


def replay_rows(*, base, spec, prompts_path: Path, measured: dict[str, Sequence[str]], cache_dir: Path,
                system: str | None = None, precision: str = "fp32") -> ReplayRows:
    """``spec``: the recipe's ``train.replay``. Generates (or reads from the cache) the base model's
    answers to ``spec.rows`` prompts drawn by seed. An answer cut off by ``max_new_tokens`` (SmolLM2
    runs past 128 tokens on most open requests) is kept as an open-ended row: trained on its text but
    not on an end-of-turn token, which would teach the model to stop mid-sentence.

    ``precision``: the weights the base answers in, the run's training precision. The KL targets
    are the base's distributions under the same autocast, so bf16 answers are no less the base's
    own; on the demo's CPU (avx512_bf16, no AMX) 64 replay prompts took 17.7 s in bf16 against
    34.0 s in fp32, in batches of 64 (50.3 s in fp32 in batches of 16, as before)."""
    from ..evaluate.forgetting import load_general_prompts

    prompts = load_general_prompts(prompts_path, field="train.replay.prompts")
    check_disjoint(prompts, prompts_path, measured)
    prompts_sha = sha256_file(prompts_path)
    chosen = random.Random(spec.seed).sample(prompts, min(spec.rows, len(prompts)))
    cache = cache_dir / f"replay-{_cache_key(base.sha256 or base.ref, prompts_sha, spec, precision)}.jsonl"
    if cache.is_file():
        answered = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    else:
        answered = _answer(base, chosen, spec.max_new_tokens, precision=precision)
        atomic_write_jsonl(cache, answered)
    rows = []
    for item in answered:
        if not item["answer"].strip():
            continue  # nothing to learn from an empty answer
        messages = [{"role": "user", "content": item["prompt"]}, {"role": "assistant", "content": item["answer"]}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        meta = {"replay": True, "replay_id": item["id"], **({} if item["finished"] else {"open_end": True})}
        rows.append(ChatRow(messages=messages, reference=None, meta=meta))
    open_ended = sum(1 for r in rows if r.meta.get("open_end"))
    record = {"prompts": str(prompts_path), "prompts_sha256": prompts_sha, "asked": len(answered), "kept": len(rows),
              "finished": len(rows) - open_ended, "open_ended": open_ended, "cache": cache.name, "seed": spec.seed,
              "max_new_tokens": spec.max_new_tokens, "precision": precision}
    return ReplayRows(rows, record)


REPLAY_BATCH = 64  # decoding on a CPU pays per step more than per row: 64 rows a step ran 1.5x faster than 16
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _answer(base, prompts, max_new_tokens: int, *, precision: str = "fp32") -> list[dict]:
    import torch

    from ..models.generation import generate_responses
    from ..models import load_model, load_tokenizer

    tokenizer = load_tokenizer(base, padding_side="left")
    model = load_model(base, dtype=getattr(torch, _DTYPES.get(precision, "float32")))
    model.eval()
    with torch.inference_mode():
        answers = generate_responses(model, tokenizer, [[{"role": "user", "content": p.prompt}] for p in prompts],
                                     max_new_tokens=max_new_tokens, batch_size=REPLAY_BATCH)
    out = []
    for prompt, answer in zip(prompts, answers):
        # The decoded answer drops the end-of-turn token; re-encoding it tells whether generation used
        # its whole budget (cut off) or stopped on its own.
        used = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
        out.append({"id": prompt.id, "prompt": prompt.prompt, "answer": answer, "finished": used < max_new_tokens - 1})
    return out
