"""Generation stops at the family's own end-of-turn token, read from its chat template, in every stage
that generates (eval, forgetting, explanations, the local teacher, the export check, the server)."""

from __future__ import annotations

import pytest
import torch

from tunewright.errors import TunewrightError
from tunewright.models.generation import continue_texts, generate_responses
from tunewright.models.stops import end_of_turn_token, stop_token_ids

# Chat templates as the families write them (trimmed to what matters here): each ends an assistant
# turn with its own token, which is not the tokenizer's eos.
FAMILIES = {
    "gemma": ("<end_of_turn>", "<bos>{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
              "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
              "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
    "phi3": ("<|end|>", "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
    "llama3": ("<|eot_id|>", "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
}
SPECIALS = ["<eos>", "<bos>", "<pad>", "<end_of_turn>", "<start_of_turn>", "<|end|>", "<|user|>", "<|assistant|>",
            "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]


def family_tokenizer(template: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(["user model assistant hello the price is 189", "what next"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = template
    return tokenizer


class ScriptedModel:
    """Answers every prompt with the same ids, ignoring the stop ids it is given: what a model does
    that writes its end-of-turn token and then goes on with an invented next turn."""

    generation_config = None

    def __init__(self, script: list[int]):
        self.script = torch.tensor(script)

    def generate(self, input_ids, attention_mask, max_new_tokens, **_):
        tail = self.script[:max_new_tokens].expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, tail], dim=1)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_end_of_turn_token_comes_from_the_template_and_stops_generation(family):
    token, template = FAMILIES[family]
    tokenizer = family_tokenizer(template)
    end = tokenizer.convert_tokens_to_ids(token)
    assert end_of_turn_token(tokenizer) == token
    assert stop_token_ids(tokenizer) == [tokenizer.eos_token_id, end]
    reply = tokenizer("the price is 189", add_special_tokens=False)["input_ids"]
    invented = tokenizer("<|user|> what next", add_special_tokens=False)["input_ids"]
    model = ScriptedModel(reply + [end] + invented)
    answers = generate_responses(model, tokenizer, [[{"role": "user", "content": "hello"}]], max_new_tokens=40)
    assert answers == ["the price is 189"]
    assert continue_texts(model, tokenizer, ["hello"], max_new_tokens=40) == ["the price is 189"]


def test_a_generation_config_adds_its_own_ids_first():
    from transformers import GenerationConfig

    tokenizer = family_tokenizer(FAMILIES["gemma"][1])
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=[end, 7])) == [end, 7, tokenizer.eos_token_id]


def test_no_template_means_the_eos_alone_and_no_eos_at_all_is_refused():
    tokenizer = family_tokenizer(None)
    assert end_of_turn_token(tokenizer) is None and stop_token_ids(tokenizer) == [tokenizer.eos_token_id]
    tokenizer.eos_token = None
    with pytest.raises(TunewrightError, match="eos_token"):
        stop_token_ids(tokenizer)
