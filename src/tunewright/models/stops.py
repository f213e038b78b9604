"""Where a model's reply ends: the one place every stage learns which token ids stop generation.

Families end a turn with their own token, often not the tokenizer's eos: Gemma writes
``<end_of_turn>``, Phi-3 ``<|end|>``, Llama 3 ``<|eot_id|>``, ChatML models ``<|im_end|>``. Stopping
only at ``eos_token_id`` lets an answer run on into an invented next turn, which then reaches
evaluation answers and synthetic rows. The end-of-turn token is read from the model's own chat
template (what it writes right after an assistant reply), not from a list of known names.
"""

from __future__ import annotations

from ..errors import TunewrightError

# Marker strings the sample conversation carries, so the reply can be found again in the rendering.
_USER, _REPLY = "PROBE-USER-1", "PROBE-REPLY-2"


def added_tokens(tokenizer) -> list[str]:
    """The tokenizer's added tokens, longest first, so "<|im_end|>" is not shadowed by a prefix of it."""
    return sorted({t.content for t in tokenizer.added_tokens_decoder.values()}, key=len, reverse=True)


def end_of_turn_token(tokenizer) -> str | None:
    """The added token the chat template writes right after an assistant reply (<|im_end|> in ChatML)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": _USER}, {"role": "assistant", "content": _REPLY}], tokenize=False)
    except Exception:  # a template may refuse this shape; then the tokenizer's eos is all we know
        return None
    at = text.rfind(_REPLY)
    if at < 0:
        return None
    after = text[at + len(_REPLY):]
    return next((token for token in added_tokens(tokenizer) if after.startswith(token)), None)


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id generation stops at: the generation config's eos ids, the tokenizer's eos and the chat
    template's end-of-turn token, in that order, without repeats."""
    ids: list[int] = []
    configured = getattr(generation_config, "eos_token_id", None)
    for value in ([configured] if isinstance(configured, int) else list(configured or [])):
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    for token in (tokenizer.eos_token, end_of_turn_token(tokenizer)):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    if not ids:
        raise TunewrightError("the tokenizer has no eos token and its chat template no end-of-turn token, so "
                              "generation would never stop; set eos_token in tokenizer_config.json",
                              field="eos_token")
    return ids
