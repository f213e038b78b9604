"""Chat rows with image parts -> a vision-language model's inputs, loss only on the assistant's tokens.

The model's processor does what differs per family: it resizes the images and expands each image
placeholder of the chat template into the image tokens the model expects (one per patch group, a
number only the processor knows). So the assistant's tokens are found by token counts, not
characters: the processor's ids for the prompt up to an assistant turn are a prefix of the ids for
the whole conversation, and the turn's tokens lie between the two prefixes around it. Image tokens
always lie in a user turn, so they never carry a label.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch

from ..errors import TunewrightError
from .media import media_path
from .parts import ImagePart, TextPart
from .tokenize import IGNORE_INDEX


PER_TOKEN = ("mm_token_type_ids", "token_type_ids")  # one value per token: padded along with the ids
# Where a row's image refs (media/<sha256>.<ext>) are read from: a dataset version's folder, or, where
# no version is written (the server, `generate`), the checked bytes behind each ref.
MediaSource = Union[str, Path, Mapping[str, bytes]]


@dataclass(frozen=True)
class VisionRow:
    inputs: dict[str, torch.Tensor]  # the processor's output for one row (batch dim 1)
    labels: torch.Tensor  # (1, length)

    @property
    def n_trainable(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def _open_image(media: MediaSource, ref: str):
    from PIL import Image

    if isinstance(media, Mapping):
        return Image.open(io.BytesIO(media[ref]))
    return Image.open(media_path(media, ref))


def _as_parts(message, media: MediaSource) -> tuple[dict, list]:
    """A message in the chat-template shape (content always a list of parts, as VLM templates
    iterate it) and its images, opened in part order."""
    content = message.content
    if isinstance(content, str):
        return {"role": message.role, "content": [{"type": "text", "text": content}]}, []
    parts, images = [], []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            with _open_image(media, part.image) as image:
                images.append(image.convert("RGB"))
            parts.append({"type": "image"})
        else:
            raise TunewrightError(_unreadable(part), field="content")
    return {"role": message.role, "content": parts}, images


def _unreadable(part) -> str:
    return f"a vision-language model cannot read {part.modality} parts; align them to text first (tunewright data align)"


def _shaped(messages, media: MediaSource) -> tuple[list[dict], list[list]]:
    """Every message in the chat-template shape, and the images each one holds."""
    pairs = [_as_parts(message, media) for message in messages]
    return [shaped for shaped, _ in pairs], [images for _, images in pairs]


def require_image_rows(rows, file: str | Path) -> None:
    """Refuse, before a run starts, a row with parts a vision-language model cannot read (audio),
    naming its line of ``file`` and the part."""
    for number, row in enumerate(rows, start=1):
        for m_index, message in enumerate(row.messages):
            for p_index, part in enumerate([] if isinstance(message.content, str) else message.content):
                if not isinstance(part, (TextPart, ImagePart)):
                    raise TunewrightError(_unreadable(part), file=file, line=number,
                                          field=f"messages[{m_index}].content[{p_index}]")


def _process(processor, messages: list[dict], images: list, *, generation_prompt: bool) -> dict[str, torch.Tensor]:
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    kwargs = {"images": [images]} if images else {}
    return processor(text=[text], return_tensors="pt", add_special_tokens=False, **kwargs)


def encode_vision_row(processor, messages, folder: str | Path, max_length: int) -> VisionRow:
    """One row (``data.schema.Message`` list) through the processor, labels on assistant turns only,
    each through its end-of-turn tokens (what the next turn's prompt adds is not the assistant's)."""
    converted, images_per_message = _shaped(messages, Path(folder))
    all_images = [image for images in images_per_message for image in images]
    full = _process(processor, converted, all_images, generation_prompt=False)
    ids = full["input_ids"][0]
    labels = torch.full_like(ids, IGNORE_INDEX)
    for index, message in enumerate(converted):
        if message["role"] != "assistant":
            continue
        shown = [image for images in images_per_message[:index] for image in images]
        start = len(_process(processor, converted[:index], shown, generation_prompt=True)["input_ids"][0])
        prefix = _process(processor, converted[: index + 1], shown, generation_prompt=False)["input_ids"][0]
        end = len(prefix)
        if end > len(ids) or not torch.equal(ids[:end], prefix) or end <= start:
            raise TunewrightError("the model's chat template renders a turn differently once later turns follow, so "
                                  "the assistant's tokens cannot be told apart; use single-turn rows",
                                  field="chat_template")
        labels[start:end] = ids[start:end]
    if len(ids) > max_length:
        # Cutting inside the image tokens would leave the model fewer tokens than image features.
        raise TunewrightError(f"a row with its image tokens is {len(ids)} tokens, over max_length={max_length}",
                              field="train.max_length")
    return VisionRow(inputs=dict(full), labels=labels.unsqueeze(0))


def prompt_inputs(processor, messages, media: MediaSource) -> dict[str, torch.Tensor]:
    """The processor's inputs to answer a row: every message before its last assistant turn (all of
    them if it has none), ending with the generation prompt."""
    messages = list(messages)
    if messages and messages[-1].role == "assistant":
        messages = messages[:-1]
    shaped, images = _shaped(messages, media)
    return dict(_process(processor, shaped, [image for opened in images for image in opened], generation_prompt=True))


def collate_vision(rows: Sequence[VisionRow], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels; image tensors joined as each processor lays them out:
    Qwen2-VL flattens every image's patches into one (patches, dim) tensor with ``image_grid_thw``
    rows, Idefics3 and LLaVA stack per-row tensors (Idefics3 pads the image count per row)."""
    width = max(r.labels.shape[1] for r in rows)

    def padded(column, fill: int) -> torch.Tensor:
        out = torch.full((len(rows), width), fill, dtype=column(rows[0]).dtype)
        for i, row in enumerate(rows):
            out[i, : row.labels.shape[1]] = column(row)[0]
        return out

    batch = {"input_ids": padded(lambda r: r.inputs["input_ids"], pad_token_id),
             "attention_mask": padded(lambda r: r.inputs["attention_mask"], 0),
             "labels": padded(lambda r: r.labels, IGNORE_INDEX)}
    for key in (k for k in rows[0].inputs if k in PER_TOKEN):  # Qwen2-VL's image-token marks: text (0) on padding
        batch[key] = padded(lambda r, key=key: r.inputs[key], 0)
    extra = [k for k in rows[0].inputs if k not in ("input_ids", "attention_mask", *PER_TOKEN)]
    for key in extra:
        tensors = [r.inputs[key] for r in rows if key in r.inputs]
        if key in ("pixel_values", "pixel_attention_mask") and tensors[0].dim() == 5 - (key == "pixel_attention_mask"):
            # Idefics3: (1, images, ...) per row; rows with fewer images are padded with zeros, as its processor does.
            most = max(t.shape[1] for t in tensors)
            tensors = [torch.cat([t, t.new_zeros((1, most - t.shape[1], *t.shape[2:]))], dim=1) for t in tensors]
        batch[key] = torch.cat(tensors, dim=0)
    return batch
