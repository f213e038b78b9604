"""How a family's chat template wants a conversation: the one place every stage renders one.

Templates differ in what they accept and in what they add:
- Gemma 2 and Mistral v0.1/0.2 raise on a system message. Their own model cards put instructions
  at the start of the first user turn, so a leading system message is folded in there (open-book
  records travel in the system message, so refusing would rule those families out).
- Qwen3 writes a thinking block. With ``enable_thinking=False`` its generation prompt ends with an
  empty ``<think></think>``, so the block is prompt, not answer: trained without it, a single-turn
  row would teach the model to write an empty block. Templates that do not know the flag ignore it.

``render`` passes both through ``apply_chat_template``; ``assistant_char_spans``
(``data/tokenize.py``) uses it for training rows, generation for prompts, so what a model is
trained on and what it is asked agree.
"""

from __future__ import annotations

from typing import Sequence

_SYSTEM, _USER = "PROBE-SYSTEM-7", "PROBE-USER-8"
_CACHE_ATTR = "_tunewright_takes_system"
TEMPLATE_FLAGS = {"enable_thinking": False}


def takes_system(tokenizer) -> bool:
    """Whether the chat template renders a system message (cached on the tokenizer)."""
    known = getattr(tokenizer, _CACHE_ATTR, None)
    if known is None:
        try:
            text = tokenizer.apply_chat_template([{"role": "system", "content": _SYSTEM},
                                                  {"role": "user", "content": _USER}],
                                                 tokenize=False, add_generation_prompt=True, **TEMPLATE_FLAGS)
            known = _SYSTEM in text
        except Exception:  # Jinja's raise_exception("System role not supported") and the like
            known = False
        try:
            setattr(tokenizer, _CACHE_ATTR, known)
        except AttributeError:
            pass
    return known


def fit_conversation(tokenizer, messages: Sequence[dict]) -> list[dict]:
    """The conversation as the template can take it: a leading system message goes to the start of the
    first user turn where the template has no system role."""
    messages = [dict(m) for m in messages]
    if not messages or messages[0].get("role") != "system" or takes_system(tokenizer):
        return messages
    system, rest = messages[0], messages[1:]
    if rest and rest[0].get("role") == "user":
        rest[0] = {**rest[0], "content": f"{system['content']}\n\n{rest[0]['content']}"}
        return rest
    return [{"role": "user", "content": system["content"]}, *rest]


def render(tokenizer, messages: Sequence[dict], *, generation_prompt: bool = True) -> str:
    """The conversation as text in the model's own template (special tokens written by the template)."""
    return tokenizer.apply_chat_template(fit_conversation(tokenizer, messages), tokenize=False,
                                         add_generation_prompt=generation_prompt, **TEMPLATE_FLAGS)


def encode_prompt(tokenizer, messages: Sequence[dict]) -> list[int]:
    """Prompt ids for generation: rendered, then encoded without added specials (the template holds them)."""
    return tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
