"""A local `transformers` model as the teacher (SmolLM2 by default): fully offline rounds."""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from ...models.chat import render
from ...models.generation import continue_texts, generate_responses
from ...models import load_model, load_tokenizer, prepare_base_model
from .base import CachingTeacher, Completion, TeacherError, TeacherRequest, Usage, register_teacher
from .cache import CallCache


class LocalTeacherSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m-instruct", description="known name, local HF folder or .gguf file")
    batch_size: int = Field(8, ge=1)


@register_teacher
class LocalTransformersTeacher(CachingTeacher):
    name: ClassVar[str] = "local-transformers"
    Settings: ClassVar[type[BaseModel]] = LocalTeacherSpec

    def __init__(self, spec: LocalTeacherSpec | None = None, cache: CallCache | None = None) -> None:
        self.spec = spec or LocalTeacherSpec()
        self.info = prepare_base_model(self.spec.model)
        self.model = self.info.ref
        self.cache = cache
        self.usage = Usage()
        self._loaded = None  # weights load on the first call that misses the cache

    def _network(self):
        if self._loaded is None:
            self._loaded = (load_model(self.info), load_tokenizer(self.info, padding_side="left"))
        return self._loaded

    def complete(self, request: TeacherRequest) -> Completion:
        [result] = self.complete_many([request])
        if isinstance(result, TeacherError):
            raise result
        return result

    def complete_many(self, requests: list[TeacherRequest]) -> list[Completion | TeacherError]:
        results: list[Completion | TeacherError | None] = [None] * len(requests)
        pending: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            hit = self._from_cache(request)
            if hit is not None:
                results[index] = hit
            else:
                # Requests sharing sampling settings and seed form one batch, so a seed reproduces a batch.
                raw = request.prompt is not None
                pending[(raw, request.temperature, request.max_tokens, request.seed)].append(index)
        for (raw, temperature, max_tokens, seed), indices in pending.items():
            model, tokenizer = self._network()
            torch.manual_seed(seed or 0)
            if raw:
                # A Magpie pre-query prompt already is the template's header: continue it as is.
                texts = continue_texts(model, tokenizer, [requests[i].prompt for i in indices],
                                       max_new_tokens=max_tokens, batch_size=self.spec.batch_size,
                                       temperature=temperature)
            else:
                texts = generate_responses(
                    model, tokenizer, [requests[i].message_dicts() for i in indices],
                    max_new_tokens=max_tokens, batch_size=self.spec.batch_size, temperature=temperature,
                )
            for index, text in zip(indices, texts):
                results[index] = self._record(requests[index], text, tokenizer)
        return results  # type: ignore[return-value]

    def _record(self, request: TeacherRequest, text: str, tokenizer) -> Completion | TeacherError:
        if not text.strip():
            self.usage.count(failed=1)
            return TeacherError("empty", "the local teacher produced no text")
        prompt = request.prompt if request.prompt is not None else render(tokenizer, request.message_dicts())
        completion = Completion(
            text=text, model=self.model,
            prompt_tokens=len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
            completion_tokens=len(tokenizer(text, add_special_tokens=False)["input_ids"]),
        )
        return self._succeeded(request, completion)  # local compute has no per-token price

