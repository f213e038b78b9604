"""Batched greedy generation with the model's own chat template and end-of-turn tokens (``stops``): the one
decoding loop evaluation, forgetting, explanations, the export check, replay rows and the local
teacher share (the server streams and batches its own way, in ``serve.engine``); and its
one-prompt-at-a-time sibling for vision-language models (``answer_inputs``)."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from .chat import render
from .stops import stop_token_ids


@torch.inference_mode()
def generate_responses(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    temperature: float = 0.0,
) -> list[str]:
    """Answer each conversation (greedy unless ``temperature`` > 0); responses come in input order."""
    prompts = [render(tokenizer, c) for c in conversations]
    return continue_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                          on_batch=on_batch, temperature=temperature)


def _through_stop(new: list[int], stops: Sequence[int]) -> list[int]:
    """New tokens through the first stop id (kept): a batch row keeps decoding after its own stop."""
    end = next((k for k, token in enumerate(new) if token in stops), None)
    return new if end is None else new[: end + 1]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.inference_mode()
def generate_ids(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad: int,
    batch_size: int = 16,
    temperature: float = 0.0,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Each prompt's new token ids, through its first stop id (kept) or ``max_new_tokens``; in input
    order. Prompts of similar length share a batch (less padding), left-padded so every row
    continues from the right edge."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    result: list[list[int]] = [[] for _ in prompts]
    stops = list(stop_ids)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in index)
        ids = torch.full((len(index), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(index):
            ids[row, width - len(prompts[i]) :] = torch.tensor(list(prompts[i]), dtype=torch.long)
            mask[row, width - len(prompts[i]) :] = 1
        output = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
            eos_token_id=stops if len(stops) > 1 else stops[0], pad_token_id=pad)
        for row, i in enumerate(index):
            result[i] = _through_stop(output[row, width:].tolist(), stops)
        if on_batch:
            on_batch(len(index))
    return result


@torch.inference_mode()
def continue_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    temperature: float = 0.0,
) -> list[str]:
    """Continue already-rendered prompts exactly as given (no template, no added special tokens)."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    stops = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    new = generate_ids(model, encoded, max_new_tokens=max_new_tokens, stop_ids=stops,
                       pad=pad_id(tokenizer), batch_size=batch_size, temperature=temperature, on_batch=on_batch)
    return [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in new]


@torch.inference_mode()
def answer_ids(model, tokenizer, inputs: dict, *, max_new_tokens: int, stop_ids: Sequence[int]) -> list[int]:
    """Greedy new token ids for one prompt a processor made, through its first stop id (kept)."""
    stops = list(stop_ids)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None,
                            temperature=None, eos_token_id=stops if len(stops) > 1 else stops[0],
                            pad_token_id=pad_id(tokenizer))
    return _through_stop(output[0, inputs["input_ids"].shape[1]:].tolist(), stops)


@torch.inference_mode()
def answer_inputs(
    model,
    tokenizer,
    inputs: Iterable[dict],
    *,
    max_new_tokens: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers to prompts a processor already made (a vision-language model's ids with its
    image tensors), one prompt at a time: each family lays out its image tensors differently, so
    they are not padded into shared batches here. Stops as ``generate_responses`` does."""
    stops = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    answers = []
    for prompt in inputs:
        new = answer_ids(model, tokenizer, prompt, max_new_tokens=max_new_tokens, stop_ids=stops)
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
        if on_batch:
            on_batch(1)
    return answers
