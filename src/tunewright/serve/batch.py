"""Batch inference: answer every row of a JSONL file with the base model or an adapter.

Rows may hold image and audio parts, read as `tunewright data import` reads them (paths relative to
the file, data URLs) and under the same limits. An adapter trained on aligned rows reads them as
its alignment says, as the server does; a native vision-language adapter (``train.vision``) sees
the images themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pydantic import TypeAdapter, ValidationError

from ..data.media import MediaCollector
from ..data.normalize import Where
from ..data.part_shapes import PartContext, convert_messages
from ..data.readers import iter_records
from ..data.schema import Message
from ..errors import TunewrightError
from ..io import atomic_write_jsonl, ensure_writable_dir
from ..methods.attach import load_for_inference
from ..models.adapters import resolve_ref
from ..retrieval.context import retriever_for
from ..models.generation import generate_responses
from .media import as_text

_MESSAGES = TypeAdapter(list[Message])


def _conversation(record: dict, file: Path, line: int, media: MediaCollector) -> list[dict]:
    if "messages" in record:
        converted = record["messages"]
        if isinstance(converted, list):
            converted = convert_messages(converted, PartContext(Where(file, line), base=file.parent, media=media))
        try:
            messages = _MESSAGES.validate_python(converted)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            raise TunewrightError(err["msg"], file=file, line=line, field=f"messages{loc}") from None
        if not messages or messages[-1].role == "assistant":
            raise TunewrightError("must end with a user message to answer", file=file, line=line, field="messages")
        return [m.model_dump() for m in messages]
    if "prompt" in record:
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise TunewrightError("must be a non-empty string", file=file, line=line, field="prompt")
        return [{"role": "user", "content": record["prompt"]}]
    raise TunewrightError("row needs a 'messages' list or a 'prompt' string", file=file, line=line, field="messages")


def generate_file(
    workspace,
    *,
    model_ref: str,
    input_path: Path,
    output_path: Path,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_phase: Callable[[str, int], None] | None = None,
) -> int:
    """Validate all input first, then generate; the output appears whole or not at all."""
    recipe = workspace.recipe
    records = list(iter_records(Path(input_path)))
    collector = MediaCollector(recipe.data.media)
    conversations = [_conversation(record, Path(input_path), line, collector) for line, record in records]
    ensure_writable_dir(Path(output_path).parent)
    max_new_tokens = max_new_tokens or recipe.eval.max_new_tokens
    if recipe.train.vision is not None:
        responses = _native_answers(workspace, model_ref, conversations, collector, Path(input_path), max_new_tokens,
                                    on_batch=on_batch, on_phase=on_phase)
    else:
        media = collector.contents()
        resolved = resolve_ref(model_ref, base_model=recipe.base_model, registry=workspace.registry)
        conversations = [_aligned(c, media, resolved.adapter_path, model_ref, input_path, line)
                         for (line, _), c in zip(records, conversations)]
        retriever = retriever_for(workspace, resolved.adapter_path)
        if retriever is not None:  # an open-book adapter is asked with its records, as it was trained
            conversations = [retriever.augment(c) for c in conversations]
        model, tokenizer = load_for_inference(resolved)
        if on_phase:
            on_phase(model_ref, len(conversations))
        responses = generate_responses(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size or recipe.eval.batch_size, on_batch=on_batch)
    atomic_write_jsonl(output_path, [{**record, "response": response} for (_, record), response in zip(records, responses)])
    return len(responses)


def _aligned(conversation: list[dict], media: dict[str, bytes], adapter_path, model_ref: str, file: Path,
             line: int) -> list[dict]:
    """Image and audio parts as the adapter's alignment reads them; a refusal names the row."""
    try:
        return as_text(conversation, media, adapter_path, model_ref)
    except TunewrightError as exc:
        raise TunewrightError(exc.message, file=file, line=line, field=exc.field) from None


def _native_answers(workspace, model_ref: str, conversations: list[list[dict]], collector: MediaCollector,
                    input_path: Path, max_new_tokens: int, *, on_batch, on_phase) -> list[str]:
    """A vision-language base or its native adapter, each row answered with its images."""
    from types import SimpleNamespace

    from ..data.vision import prompt_inputs, require_image_rows
    from ..models.generation import answer_inputs
    from ..models.vision import attach_vision_adapter, load_processor, load_vision_model

    resolved = resolve_ref(model_ref, base_model=workspace.recipe.base_model, registry=workspace.registry,
                           vision=True)
    rows = [SimpleNamespace(messages=_MESSAGES.validate_python(c)) for c in conversations]
    require_image_rows(rows, input_path)
    processor = load_processor(resolved.base.folder)
    media = collector.contents()
    prompts = [prompt_inputs(processor, row.messages, media) for row in rows]
    model = load_vision_model(resolved.base.folder)
    if resolved.adapter_path is not None:
        model = attach_vision_adapter(model, resolved.adapter_path)
    if on_phase:
        on_phase(model_ref, len(prompts))
    return answer_inputs(model, processor.tokenizer, prompts, max_new_tokens=max_new_tokens, on_batch=on_batch)
