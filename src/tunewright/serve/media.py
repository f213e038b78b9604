"""Chat requests with image and audio parts: OpenAI's ``image_url`` (a data URL) and ``input_audio``.

Parts are decoded and checked with the import's own code (``data.part_shapes``, ``data.media``) under
the recipe's ``data.media`` limits, so a request is held to what training data is. Only inline media
is taken (``PartContext.inline_only``): a file path or web address in a request would make the
server read its own disk or the network for a client. On a text base the parts reach the model as
text, through the alignment the adapter was trained with (``align.adapter``); a model without one
is refused with a 400, naming the part. On a vision-language base (``train.vision``) the model's own
processor reads the images, as in eval and training (``data.vision``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..align.adapter import AlignmentConfig, align_messages
from ..data.media import MediaCollector
from ..data.normalize import Where
from ..data.part_shapes import PartContext, convert_messages
from ..data.parts import content_text
from ..data.schema import Message
from ..data.vision import prompt_inputs
from ..errors import TunewrightError

ACCEPTED = ("text", "image_url", "input_audio")


def _parts(messages: list[Any]):
    for m_index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for p_index, part in enumerate(content):
                yield f"messages[{m_index}].content[{p_index}]", part


def decode_parts(messages: list[Any], limits) -> tuple[list[Any], dict[str, bytes]]:
    """The messages with each media part stored as a canonical ref, and the bytes behind each ref."""
    for field, part in _parts(messages):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ACCEPTED:
            raise TunewrightError(f"part type {kind!r} is not taken here; send {', '.join(ACCEPTED)} parts",
                                  field=f"{field}.type")
    collector = MediaCollector(limits)
    converted = convert_messages(messages, PartContext(Where(None, None), base=None, media=collector, inline_only=True))
    return converted, collector.contents()


def as_text(messages: list[dict], media: dict[str, bytes], adapter_dir: Path | None, model: str) -> list[dict]:
    """Messages whose parts are all text pass unchanged; media parts become the aligned text of the
    adapter in ``adapter_dir`` (None: the base model, which reads text only)."""
    media_parts = [(field, part["type"]) for field, part in _parts(messages) if part.get("type") != "text"]
    if not media_parts:
        return messages
    config = AlignmentConfig.read(adapter_dir)
    field, kind = media_parts[0]
    if config is None:
        raise TunewrightError(f"model '{model}' reads text only; {kind} parts need an adapter trained on a "
                              "`tunewright data align` dataset", field=field)
    for field, kind in media_parts:
        if kind not in config.engines:
            raise TunewrightError(f"model '{model}' was trained on {', '.join(config.engines)} parts, not {kind}",
                                  field=field)
    return align_messages(messages, config, media)


def vision_inputs(processor, messages: list[dict], media: dict[str, bytes]) -> tuple[list[int], dict | None]:
    """A chat request as a vision-language model's prompt: its token ids, and the image tensors (with
    any per-token marks) the processor made for them, or None when the request holds no image (its
    ids then batch with other text prompts)."""
    images = False
    for field, part in _parts(messages):
        if part["type"] == "audio":
            raise TunewrightError("a vision-language model cannot read audio parts; send image_url and text parts",
                                  field=field)
        images = images or part["type"] == "image"
    inputs = prompt_inputs(processor, [Message.model_validate(m) for m in messages], media)
    ids = inputs["input_ids"][0].tolist()
    if not images:
        return ids, None
    return ids, {key: value for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}


def as_logged(messages: list[dict]) -> list[dict]:
    """What the request log, drift report and feedback keep of a native model's request: each image
    part as its content-addressed name in brackets, never its bytes."""
    return [{"role": m["role"], "content": content_text(Message.model_validate(m).content)} for m in messages]
