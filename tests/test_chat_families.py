"""Chat templates of other families: what the model is trained on is exactly its answer (and its
end-of-turn token), and a system message reaches templates that have no system role.

The templates are trimmed copies of the families' own (the parts that decide these behaviours),
written here so nothing is downloaded."""

from __future__ import annotations

import pytest

from tunewright.data.tokenize import IGNORE_INDEX, encode_chat
from tunewright.errors import TunewrightError
from tunewright.models.chat import fit_conversation, render, takes_system

GEMMA2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
          "{% endif %}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
          "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
          "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
QWEN3 = ("{% set ns = namespace(last_query=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
         "{% set ns.last_query = loop.index0 %}{% endif %}{% endfor %}"
         "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|>assistant\n"
         "{% if loop.index0 > ns.last_query %}<think>\n\n</think>\n\n{% endif %}{{ m['content'] }}<|im_end|>\n"
         "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n"
         "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
PHI3 = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}")
MISTRAL3 = ("{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
            "{% set turns = messages[1:] %}{% else %}{% set turns = messages %}{% endif %}{{ bos_token }}"
            "{% set last_user = (turns | selectattr('role', 'equalto', 'user') | list | last) %}"
            "{% for m in turns %}{% if m['role'] == 'user' %}{% if m == last_user and system is defined %}"
            "[INST] {{ system }}\n\n{{ m['content'] }}[/INST]{% else %}[INST] {{ m['content'] }}[/INST]{% endif %}"
            "{% else %} {{ m['content'] | trim }}{{ eos_token }}{% endif %}{% endfor %}")
LLAMA31 = ("{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
           "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
           "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
           "Today Date: 26 Jul 2024\n\n{{ system_message }}<|eot_id|>{%- for m in messages %}"
           "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{%- endfor %}"
           "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}")
SPECIALS = ["<s>", "</s>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>",
            "<think>", "</think>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>",
            "[INST]", "[/INST]", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
            "<|end_header_id|>"]
FAMILIES = {  # template, bos, eos, the token that ends an assistant turn
    "gemma2": (GEMMA2, "<bos>", "<eos>", "<end_of_turn>"),
    "qwen3": (QWEN3, None, "<|im_end|>", "<|im_end|>"),
    "phi3": (PHI3, None, "<|endoftext|>", "<|end|>"),
    "mistral-v0.3": (MISTRAL3, "<s>", "</s>", "</s>"),
    "llama3.1": (LLAMA31, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"),
}
SYSTEM = "Answer from the records."
ONE_TURN = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What does the tent cost?"},
            {"role": "assistant", "content": "The tent costs $189."}]
TWO_TURNS = ONE_TURN + [{"role": "user", "content": "And the lantern?"},
                        {"role": "assistant", "content": "The lantern costs $29."}]


def family_tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    template, bos, eos, _end = FAMILIES[family]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([m["content"] for m in TWO_TURNS], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token="<pad>")
    tokenizer.chat_template = template
    return tokenizer


def trained_text(tokenizer, messages) -> list[str]:
    """The labelled stretches of an encoded row, decoded (special tokens kept)."""
    row = encode_chat(tokenizer, messages, 4096)
    runs, current = [], []
    for token, label in zip(row.input_ids, row.labels):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def answer_and_stop(stretch: str, answer: str, end: str, eos: str) -> bool:
    """The stretch is the answer and its end-of-turn token; around them only what the template writes
    between turns may come along (Mistral's space before the answer, a line break, Phi-3's final eos)."""
    body = stretch.strip()
    return body.startswith(answer + end) and body[len(answer + end):].strip() in ("", eos)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_only_each_answer_and_its_end_of_turn_token_are_trained(family):
    tokenizer = family_tokenizer(family)
    _template, _bos, eos, end = FAMILIES[family]
    answers = [m["content"] for m in TWO_TURNS if m["role"] == "assistant"]
    for messages, n in ((ONE_TURN, 1), (TWO_TURNS, 2)):
        stretches = trained_text(tokenizer, messages)
        assert len(stretches) == n, stretches
        assert all(answer_and_stop(s, a, end, eos) for s, a in zip(stretches, answers)), stretches


def test_a_template_without_a_system_role_gets_the_system_message_in_the_first_user_turn():
    gemma = family_tokenizer("gemma2")
    assert not takes_system(gemma) and takes_system(family_tokenizer("qwen3"))
    fitted = fit_conversation(gemma, ONE_TURN)
    assert [m["role"] for m in fitted] == ["user", "assistant"]
    assert fitted[0]["content"] == f"{SYSTEM}\n\nWhat does the tent cost?"
    prompt = render(gemma, ONE_TURN[:2])
    assert prompt == f"<bos><start_of_turn>user\n{SYSTEM}\n\nWhat does the tent cost?<end_of_turn>\n<start_of_turn>model\n"
    # Training sees the same text up to the answer as generation is prompted with.
    assert render(gemma, ONE_TURN, generation_prompt=False).startswith(prompt)


def test_qwen3_is_asked_with_its_empty_thinking_block_and_not_trained_on_it():
    qwen = family_tokenizer("qwen3")
    assert render(qwen, ONE_TURN[:2]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert all("think" not in text for text in trained_text(qwen, TWO_TURNS))


def test_a_template_that_hides_the_answer_is_refused_naming_the_chat_template():
    tokenizer = family_tokenizer("phi3")
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|assistant|>\n"
                               "(earlier answer)<|end|>\n{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endif %}"
                               "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    with pytest.raises(TunewrightError, match="single-turn rows") as caught:
        encode_chat(tokenizer, TWO_TURNS, 4096)
    assert caught.value.field == "chat_template"
