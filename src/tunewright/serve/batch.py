"""Batch inference: answer every row of a JSONL file with the base model or an adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pydantic import TypeAdapter, ValidationError

from ..data.readers import iter_records
from ..data.schema import Message
from ..errors import TunewrightError
from ..io import atomic_write_jsonl, ensure_writable_dir
from ..methods.attach import load_for_inference
from ..models.adapters import resolve_ref
from ..retrieval.context import retriever_for
from ..models.generation import generate_responses

_MESSAGES = TypeAdapter(list[Message])


def _conversation(record: dict, file: Path, line: int) -> list[dict]:
    if "messages" in record:
        try:
            messages = _MESSAGES.validate_python(record["messages"])
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
    records = list(iter_records(Path(input_path)))
    conversations = [_conversation(record, Path(input_path), line) for line, record in records]
    ensure_writable_dir(Path(output_path).parent)
    recipe = workspace.recipe
    resolved = resolve_ref(model_ref, base_model=recipe.base_model, registry=workspace.registry)
    retriever = retriever_for(workspace, resolved.adapter_path)
    if retriever is not None:  # an open-book adapter is asked with its records, as it was trained
        conversations = [retriever.augment(c) for c in conversations]
    model, tokenizer = load_for_inference(resolved)
    if on_phase:
        on_phase(model_ref, len(conversations))
    responses = generate_responses(
        model,
        tokenizer,
        conversations,
        max_new_tokens=max_new_tokens or recipe.eval.max_new_tokens,
        batch_size=batch_size or recipe.eval.batch_size,
        on_batch=on_batch,
    )
    atomic_write_jsonl(output_path, [{**record, "response": response} for (_, record), response in zip(records, responses)])
    return len(responses)
