"""Batched greedy generation with the model's own chat template and end-of-turn token."""

from __future__ import annotations

from typing import Callable, Sequence

import torch


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
    prompts = [
        tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations
    ]
    return continue_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                          on_batch=on_batch, temperature=temperature)


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
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    # Batching prompts of similar length wastes less compute on padding.
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    responses: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer([prompts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        for i, tokens in zip(index, new_tokens):
            responses[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        if on_batch:
            on_batch(len(index))
    return responses
