"""Convert the content parts users bring into the canonical parts of ``data.parts``.

A part's ``type`` picks its shape: ``text``; Hugging Face ``image`` (``image``, ``url`` or ``path``: a file
path, data URL, or a datasets ``{"bytes", "path"}`` struct) and ``audio`` (``audio`` or ``path``); OpenAI
``image_url`` (``{"url": ...}``) and ``input_audio`` (``{"data": <base64>, "format": ...}``). Relative paths
are read from the data file's folder. Each media part is decoded and checked by ``data.media`` and
becomes ``{"type": "image", "image": "media/<sha256>.<ext>"}``. Adding a shape is one ``PartShape``
subclass plus ``@register_part_shape``.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..plugins import PluginRegistry
from .media import MediaCollector, MediaError

if TYPE_CHECKING:
    from .normalize import Where

INPUT_AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")


@dataclass(frozen=True)
class PartContext:
    """What converting a part needs: where errors point, the data file's folder, the import's media."""

    where: "Where"
    base: Path | None
    media: MediaCollector
    # Media only inside the data (data URLs, base64, bytes): what a server takes from clients, so a
    # request cannot make it read its own files or the network.
    inline_only: bool = False

    def fail(self, message: str, field: str) -> Exception:
        return self.where.error(message, field)

    def store(self, source: Path | bytes, modality: str, field: str) -> str:
        try:
            return self.media.add(source, modality).ref
        except MediaError as exc:
            raise self.fail(str(exc), field) from None


class PartShape:
    name: ClassVar[str]  # the part's "type"
    modality: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]  # every key the shape reads besides "type"

    def convert(self, part: dict, ctx: PartContext, field: str) -> dict:
        raise NotImplementedError


PART_SHAPES: PluginRegistry[PartShape] = PluginRegistry("content part type", group="part_shapes")
register_part_shape = PART_SHAPES.register


@register_part_shape
class TextShape(PartShape):
    name, modality, fields = "text", "text", ("text",)

    def convert(self, part: dict, ctx: PartContext, field: str) -> dict:
        return {"type": "text", "text": part.get("text")}  # the schema reports a missing or empty text


class _FileShape(PartShape):
    """A part naming its file under one of ``fields`` (the first present one wins; two is an error)."""

    def convert(self, part: dict, ctx: PartContext, field: str) -> dict:
        given = [key for key in self.fields if part.get(key) is not None]
        if not given:
            raise ctx.fail(f"an {self.name} part needs one of {', '.join(map(repr, self.fields))} "
                           "(a file path or data URL)", field)
        if len(given) > 1:
            raise ctx.fail(f"give the {self.modality} once, not under both {given[0]!r} and {given[1]!r}", field)
        key = given[0]
        source = resolve_source(part[key], ctx, f"{field}.{key}")
        return {"type": self.modality, self.modality: ctx.store(source, self.modality, f"{field}.{key}")}


@register_part_shape
class ImageShape(_FileShape):
    name, modality, fields = "image", "image", ("image", "url", "path")


@register_part_shape
class AudioShape(_FileShape):
    name, modality, fields = "audio", "audio", ("audio", "path")


@register_part_shape
class ImageUrlShape(PartShape):
    """OpenAI's chat format; ``detail`` is a hint for hosted models and has no meaning here."""

    name, modality, fields = "image_url", "image", ("image_url",)

    def convert(self, part: dict, ctx: PartContext, field: str) -> dict:
        value = part.get("image_url")
        field = f"{field}.image_url"
        if isinstance(value, dict):
            value, field = value.get("url"), f"{field}.url"
        if value is None:
            raise ctx.fail("missing (an image_url part needs {\"url\": <data URL or file path>})", field)
        return {"type": "image", "image": ctx.store(resolve_source(value, ctx, field), "image", field)}


@register_part_shape
class InputAudioShape(PartShape):
    name, modality, fields = "input_audio", "audio", ("input_audio",)

    def convert(self, part: dict, ctx: PartContext, field: str) -> dict:
        value = part.get("input_audio")
        field = f"{field}.input_audio"
        if not isinstance(value, dict):
            raise ctx.fail(f"must be an object {{data, format}}, got {_kind(value)}", field)
        declared = value.get("format")
        if declared not in INPUT_AUDIO_FORMATS:
            raise ctx.fail(f"must be one of {', '.join(INPUT_AUDIO_FORMATS)}, got {declared!r}", f"{field}.format")
        data = value.get("data")
        if not isinstance(data, str) or not data.strip():
            raise ctx.fail(f"must be base64 text, got {_kind(data)}", f"{field}.data")
        ref = ctx.store(_base64(data, ctx, f"{field}.data"), "audio", f"{field}.data")
        stored = ref.rsplit(".", 1)[1]
        if stored != declared:
            raise ctx.fail(f"says {declared} but the data is {stored}", f"{field}.format")
        return {"type": "audio", "audio": ref}


def resolve_source(value: Any, ctx: PartContext, field: str) -> Path | bytes:
    """A file path (relative to the data file's folder), ``file://`` or data URL, raw bytes, or a
    Hugging Face datasets struct ``{"bytes": ..., "path": ...}`` (Parquet exports hold these)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return resolve_source(value["bytes"], ctx, f"{field}.bytes")
        if value.get("path") is not None:
            return resolve_source(value["path"], ctx, f"{field}.path")
        if value.get("array") is not None:
            raise ctx.fail("decoded samples are not accepted; give the audio file (path or data URL)", field)
        raise ctx.fail("an object here needs 'bytes' or 'path'", field)
    if not isinstance(value, str) or not value.strip():
        raise ctx.fail(f"must be a file path or data URL, got {_kind(value)}", field)
    text = value.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text[:12] else ""
    if scheme == "data":
        return _data_url(text, ctx, field)
    if ctx.inline_only:
        raise ctx.fail("must be a data URL (data:<type>;base64,...); files and web addresses are not read here",
                       field)
    if scheme in ("http", "https"):
        raise ctx.fail("is a web address; download the file and give its path (import never fetches "
                       "from the network)", field)
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
    path = Path(text).expanduser()
    return path if path.is_absolute() or ctx.base is None else ctx.base / path


def _data_url(text: str, ctx: PartContext, field: str) -> bytes:
    header, sep, payload = text.partition(",")
    if not sep:
        raise ctx.fail("is not a valid data URL (no ',' before the data)", field)
    if header.lower().endswith(";base64"):
        return _base64(payload, ctx, field)
    return urllib.parse.unquote_to_bytes(payload)


def _base64(payload: str, ctx: PartContext, field: str) -> bytes:
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ctx.fail(f"is not valid base64: {exc}", field) from None


def convert_messages(messages: list[Any], ctx: PartContext) -> list[Any]:
    """Each message whose content is a list, with its parts converted; anything else is left for the
    schema to report."""
    out = []
    for m_index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, (list, tuple)):
            out.append(message)
            continue
        parts = [convert_part(part, message.get("role"), ctx, f"messages[{m_index}].content[{p_index}]")
                 for p_index, part in enumerate(content)]
        out.append({**message, "content": parts})
    return out


def convert_part(part: Any, role: Any, ctx: PartContext, field: str) -> Any:
    if isinstance(part, str):
        return {"type": "text", "text": part}  # a bare string in a part list is plainly text
    if not isinstance(part, dict):
        raise ctx.fail(f"must be a part object with a 'type', got {_kind(part)}", field)
    kind = part.get("type")
    if kind not in PART_SHAPES:
        raise ctx.fail(f"unknown part type {kind!r}; accepted: {', '.join(PART_SHAPES.names())}", f"{field}.type")
    shape = PART_SHAPES.get(kind)
    if role == "assistant" and shape.modality != "text":
        # Before the file is read: the row is wrong whatever the file holds.
        raise ctx.fail(f"{shape.modality} part in an assistant message; what the assistant says is text only "
                       "(images and audio go in user turns)", field)
    # Datasets exports give every part every column, unused ones null; a non-null unknown key is a typo.
    extra = [key for key, value in part.items() if key != "type" and key not in shape.fields and value is not None]
    if extra:
        raise ctx.fail(f"unexpected field in a {kind} part (it reads {', '.join(shape.fields)})", f"{field}.{extra[0]}")
    return shape.convert(part, ctx, field)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)
