"""Turn chat rows into token ids with loss only on what the assistant says, using the model's own template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import TunewrightError
from ..models.chat import fit_conversation, render
from ..models.stops import end_of_turn_token
from .schema import require_text

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedRow:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_trainable(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _render(tokenizer, messages: Sequence[dict], *, generation_prompt: bool) -> str:
    return render(tokenizer, messages, generation_prompt=generation_prompt)


def _spans_by_content(tokenizer, full: str, messages: Sequence[dict]) -> list[tuple[int, int]] | None:
    """Assistant spans found by reading the rendering in order: each message's text where it next
    occurs, an assistant's span running through the end-of-turn token right after it. For templates
    that render an earlier turn differently once a later one follows (Phi-3 ends the last turn with
    its eos, Qwen3 drops the thinking block of earlier turns, Mistral v0.3 moves the system prompt
    into the last user turn), where growing prefixes cannot work. None where a text is not found."""
    end_of_turn = end_of_turn_token(tokenizer)
    cursor, spans = 0, []
    for message in messages:
        if message["role"] == "system":
            continue  # a template may move it (Mistral v0.3 puts it in the last user turn)
        content = message["content"]
        at = full.find(content, cursor)
        if at < 0:
            content = content.strip()  # Mistral and Llama 3 trim turns
            at = full.find(content, cursor) if content else -1
        if at < 0:
            return None
        end = at + len(content)
        if message["role"] == "assistant":
            if end_of_turn and full.startswith(end_of_turn, end):
                end += len(end_of_turn)
            spans.append((at, end))
        cursor = end
    return spans


def assistant_char_spans(tokenizer, messages: Sequence[dict], *,
                         open_end: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation and find the character span of every assistant turn.

    Each turn's span runs from the end of the template's generation prompt to the end of that turn,
    so it includes the end-of-turn token: the model must learn to stop, not only what to say.
    Templates rarely mark assistant text (SmolLM2's has no {% generation %} block), so spans come
    from rendering growing prefixes of the conversation, or, for templates where a prefix renders
    differently from the same turns inside the whole, from finding each turn's text in order
    (``_spans_by_content``). The conversation is first fitted to the template (``models.chat``).

    ``open_end``: the last assistant turn is text cut off mid-answer (a replay answer that ran out of
    tokens), so its span stops at the end of its text: the model learns the words, not to stop there.
    """
    require_text(messages)  # a chat template given a list of parts would render it as text or fail obscurely
    messages = fit_conversation(tokenizer, messages)
    full = _render(tokenizer, messages, generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:index], generation_prompt=True)
        upto = _render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not (full.startswith(prompt) and full.startswith(upto) and len(upto) > len(prompt)):
            spans = _spans_by_content(tokenizer, full, messages)
            if spans is None:
                raise TunewrightError(
                    "the model's chat template renders a turn differently once later turns follow, and an "
                    "assistant's text is not found as written in the rendering, so the tokens to train on cannot "
                    "be told apart; use single-turn rows (one user and one assistant message) or a chat template "
                    "that renders each turn the same way", field="chat_template")
            break
        spans.append((len(prompt), len(upto)))
    if open_end and spans:
        content = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        start = spans[-1][0]
        if not content or not full.startswith(content, start):
            raise TunewrightError("the model's chat template changes the assistant's text; an open-ended answer "
                                  "cannot be trained without its end-of-turn token")
        spans[-1] = (start, start + len(content))
    return full, spans


def encode_chat(tokenizer, messages: Sequence[dict], max_length: int, *, open_end: bool = False) -> EncodedRow:
    text, spans = assistant_char_spans(tokenizer, messages, open_end=open_end)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for token_id, (start, _end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        inside = any(lo <= start < hi for lo, hi in spans)
        labels.append(token_id if inside else IGNORE_INDEX)
    return EncodedRow(input_ids=list(encoded["input_ids"][:max_length]), labels=labels[:max_length])


def collate(rows: Sequence[EncodedRow], pad_token_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        attention[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
