"""Magpie: send an instruct teacher only its chat template's header up to where a user message would
begin; it writes a plausible user question itself. A second, ordinary chat call answers the question.

Questions come from the model's own sense of what users ask, so they cannot be steered to a topic
(rows carry no topic); the answer call carries the spec and the review's guidance.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ...models import load_tokenizer, prepare_base_model
from .base import GenerationContext, Produced, register_synth_generator
from .common import Collector, GeneratorSettings, fill, make_requests

ANSWER_TEMPLATE = """{system}You are the specialist assistant described below. Answer the user's message.
{header}

{guidance}"""

SENTINEL = "\u2063MAGPIE-USER-TURN\u2063"  # invisible separators: no real template contains this
STOP_MARKERS = ["<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|start_header_id|>", "<|end|>", "<|user|>",
                "<|assistant|>", "<|endoftext|>", "</s>", "[INST]", "[/INST]", "<end_of_turn>", "<start_of_turn>"]


def trim_question(text: str, markers: list[str]) -> str:
    """The question up to the first end-of-turn or role marker: a raw completion often runs on into
    the assistant's turn."""
    cut = min((i for i in (text.find(m) for m in markers if m) if i >= 0), default=len(text))
    return text[:cut].strip()


def pre_query_from_tokenizer(tokenizer, system_prompt: str | None) -> tuple[str, str]:
    """(header before the user's words, the end-of-turn text after them) from the chat template."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    rendered = tokenizer.apply_chat_template([*messages, {"role": "user", "content": SENTINEL}], tokenize=False)
    head, found, tail = rendered.partition(SENTINEL)
    if not found:
        raise ValueError("the chat template does not show the user's message")
    return head, tail.strip().split("\n")[0].strip()


@register_synth_generator
class Magpie:
    name: ClassVar[str] = "magpie"

    class Settings(GeneratorSettings):
        pre_query_template: str | None = Field(None, description="raw header up to the user's words; "
                                                                  "derived from `tokenizer` when unset")
        tokenizer: str = Field("smollm2-135m-instruct", description="model whose chat template gives the header")
        temperature: float = Field(1.0, ge=0, le=2, description="for the question")
        max_tokens: int = Field(256, ge=1, description="for the question")
        answer_temperature: float = Field(0.7, ge=0, le=2)
        answer_max_tokens: int = Field(1024, ge=1)
        min_question_chars: int = Field(10, ge=1)
        stop_markers: list[str] = Field(default_factory=lambda: list(STOP_MARKERS))

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tokenizer = None  # loaded on the first generate() that needs it, then kept

    def pre_query(self, system_prompt: str | None) -> tuple[str, list[str]]:
        """The raw prompt, and the markers a question is cut at."""
        s = self.settings
        if s.pre_query_template is not None:
            return s.pre_query_template, s.stop_markers
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(prepare_base_model(s.tokenizer))
        head, end_of_turn = pre_query_from_tokenizer(self._tokenizer, system_prompt)
        return head, [end_of_turn, *s.stop_markers]

    def generate(self, ctx: GenerationContext, count: int) -> Produced:
        s = self.settings
        header, markers = self.pre_query(ctx.system_prompt)
        template = f"{header}\n---\n{ANSWER_TEMPLATE}"
        out = Collector(ctx, self.name, s, template, count)
        asks = make_requests(ctx, [header] * count, temperature=s.temperature, max_tokens=s.max_tokens)
        questions = []
        for request, result in zip(asks, out.complete(asks)):
            if result is None:
                continue
            question = trim_question(result.text, markers)
            if len(question) < s.min_question_chars:
                out.fail("rejected", f"generated question is empty or shorter than {s.min_question_chars} characters")
                continue
            questions.append((request.seed, question))
        system = fill(ctx, ANSWER_TEMPLATE, system=f"{ctx.system_prompt}\n\n" if ctx.system_prompt else "")
        answers = make_requests(ctx, [(("system", system), ("user", q)) for _, q in questions],
                                temperature=s.answer_temperature, max_tokens=s.answer_max_tokens)
        for (seed, question), request, result in zip(questions, answers, out.complete(answers)):
            if result is None:
                continue
            if (pair := out.pair({"question": question, "answer": result.text})) is not None:
                out.add([("user", pair[0]), ("assistant", pair[1])],
                        choices={"question_seed": seed, "answer_seed": request.seed})
        return out.produced
