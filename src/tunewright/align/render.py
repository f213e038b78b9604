"""A message with image and audio parts as the text a text-only model sees (layout "aligned-v1").

Each media part becomes its aligned text between markers (an image's OCR lines in reading order, one
per line; an audio part's transcript); the blocks and the message's text parts are joined by blank
lines in part order. The layout id is recorded with anything built from this text, so a change of
markers or joining is a new id, not a silent change under old results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import TunewrightError
from .cache import aligned_text
from .engines import DEFAULT_ENGINES

ALIGNED_LAYOUT = "aligned-v1"
MARKERS = {"image": ("[image text]", "[/image text]"), "audio": ("[audio transcript]", "[/audio transcript]")}

Resolver = Callable[[str], "str | Path"]


def render_aligned(content: str | list[Any], resolve: Resolver, cache_dir: str | Path, *,
                   settings: Mapping[str, BaseModel | dict[str, Any]] | None = None,
                   engines: Mapping[str, str] | None = None) -> str:
    """``content``: a message's content, a string or canonical parts (``{"type": "text", "text"}``,
    ``{"type": "image"|"audio", <type>: "media/<sha256>.<ext>"}``). ``resolve`` maps a media ref to
    its file; ``settings`` holds each engine's settings by engine name; ``engines`` overrides which
    engine reads a part type (default: ocr for images, asr for audio)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TunewrightError(f"must be a string or a list of parts, got {type(content).__name__}", field="content")
    chosen = {**DEFAULT_ENGINES, **(engines or {})}
    blocks: list[str] = []
    for index, part in enumerate(content):
        field = f"content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise TunewrightError("a text part needs a string 'text'", field=f"{field}.text")
            blocks.append(text)
            continue
        if kind not in MARKERS:
            raise TunewrightError(f"unknown part type {kind!r} (known: text, {', '.join(MARKERS)})",
                                  field=f"{field}.type")
        ref = part.get(kind)
        if not isinstance(ref, str) or not ref:
            raise TunewrightError(f"an {kind} part needs its media ref in '{kind}'", field=f"{field}.{kind}")
        engine = chosen[kind]
        read = aligned_text(resolve(ref), engine, cache_dir, (settings or {}).get(engine))
        opening, closing = MARKERS[kind]
        blocks.append("\n".join([opening, read, closing]) if read else f"{opening}\n{closing}")
    return "\n\n".join(blocks)
