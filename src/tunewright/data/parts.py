"""The parts a chat message's content may hold besides plain text: the canonical form every stage sees.

``content`` is a string, or a list of parts ``{"type": "text", "text": ...}``,
``{"type": "image", "image": "media/<sha256>.<ext>"}`` and ``{"type": "audio", "audio": "media/<sha256>.<ext>"}``.
An image or audio part names a file stored inside the dataset version by its content hash, so a row's
bytes (and the dataset hash over them) pin the media too. The shapes users bring (Hugging Face,
OpenAI, data URLs) are converted to these at import (``data.part_shapes``).

The discriminators carry hyphenated tags ("part-list", "image-part"): pydantic puts a tag into an
error's location, and ``normalize.validation_error`` drops hyphenated names so a path reads
``messages[0].content[1].image``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, field_validator

# Stored extension per decoded container format: the extension follows the bytes, not the name the
# user gave the file, so "photo.png" holding a JPEG is stored as .jpg.
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
AUDIO_FORMATS = {"wav": "wav", "flac": "flac", "mp3": "mp3", "ogg": "ogg"}
MEDIA_DIR = "media"
PART_TEXT_SEPARATOR = "\n\n"  # how a message's text parts join when read as text (as the aligned layout does)


def _ref_pattern(extensions) -> re.Pattern[str]:
    return re.compile(rf"^{MEDIA_DIR}/[0-9a-f]{{64}}\.({'|'.join(sorted(extensions))})$")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextPart(_Part):
    type: Literal["text"] = "text"
    text: str
    modality: ClassVar[str] = "text"

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class _MediaPart(_Part):
    pattern: ClassVar[re.Pattern[str]]
    modality: ClassVar[str]
    formats: ClassVar[dict[str, str]]

    @property
    def ref(self) -> str:
        return getattr(self, self.modality)

    @classmethod
    def _check_ref(cls, value: str) -> str:
        if not cls.pattern.match(value):
            extensions = "|".join(sorted(cls.formats.values()))
            raise ValueError(f"must be a stored media reference {MEDIA_DIR}/<sha256>.<{extensions}>, got {value!r}; "
                             "import the data file to store the media")
        return value


class ImagePart(_MediaPart):
    type: Literal["image"] = "image"
    image: str
    modality: ClassVar[str] = "image"
    formats: ClassVar[dict[str, str]] = IMAGE_FORMATS
    pattern: ClassVar[re.Pattern[str]] = _ref_pattern(IMAGE_FORMATS.values())

    @field_validator("image")
    @classmethod
    def _ref(cls, value: str) -> str:
        return cls._check_ref(value)


class AudioPart(_MediaPart):
    type: Literal["audio"] = "audio"
    audio: str
    modality: ClassVar[str] = "audio"
    formats: ClassVar[dict[str, str]] = AUDIO_FORMATS
    pattern: ClassVar[re.Pattern[str]] = _ref_pattern(AUDIO_FORMATS.values())

    @field_validator("audio")
    @classmethod
    def _ref(cls, value: str) -> str:
        return cls._check_ref(value)


MediaPart = Union[ImagePart, AudioPart]
PART_TYPES = {"text": TextPart, "image": ImagePart, "audio": AudioPart}


def _part_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"{kind}-part" if kind in PART_TYPES else None


def _content_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "text-string"
    return "part-list" if isinstance(value, (list, tuple)) else None


Part = Annotated[
    Union[Annotated[TextPart, Tag("text-part")], Annotated[ImagePart, Tag("image-part")],
          Annotated[AudioPart, Tag("audio-part")]],
    Discriminator(_part_tag, custom_error_type="part_type",
                  custom_error_message="unknown part type; use text, image or audio"),
]
Content = Annotated[
    Union[Annotated[str, Tag("text-string")], Annotated[list[Part], Tag("part-list")]],
    Discriminator(_content_tag, custom_error_type="content_type",
                  custom_error_message="must be text or a list of parts"),
]


def media_parts(content: str | list) -> list[MediaPart]:
    return [] if isinstance(content, str) else [p for p in content if isinstance(p, _MediaPart)]


def text_parts(content: str | list) -> list[str]:
    """The message's text, part by part; image and audio parts are left out (for scans, not for a model)."""
    return [content] if isinstance(content, str) else [p.text for p in content if isinstance(p, TextPart)]


def content_text(content: str | list) -> str:
    """A message as one text, for reports and logs: each image or audio part as its stored file's
    name in brackets, where the model read the file itself."""
    if isinstance(content, str):
        return content
    return " ".join(part.text if isinstance(part, TextPart) else f"[{part.modality}: {part.ref}]" for part in content)
