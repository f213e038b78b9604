"""Validate, hash and store the images and audio of part rows.

Every image and audio part is decoded at import (Pillow, PyAV), checked against ``data.media`` limits,
and kept once per content hash. The file goes into the dataset version as ``media/<sha256>.<ext>``
with the same bytes as its source, and the manifest lists what was measured (sizes, durations), so
later stages read facts about the media without decoding it again.

Pillow and PyAV are the ``multimodal`` extra: imported only when a row holds media, so text-only
installs and imports never need them.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..config import MediaLimits
from ..errors import NotFoundError, TunewrightError
from .parts import AUDIO_FORMATS, IMAGE_FORMATS, MEDIA_DIR

MIB = 1024 * 1024


class MediaError(ValueError):
    """A part's media is unusable; the caller adds the file, line and field."""


@dataclass(frozen=True)
class MediaFile:
    """One stored media file: what the manifest says about it, and where its bytes are now.

    ``source`` is the user's file (streamed into the version when it is written, and re-hashed so a
    file changed since it was checked is refused) or the decoded bytes of a data URL or base64 part.
    """

    sha256: str
    size: int
    modality: str
    format: str
    source: Path | bytes
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    sample_rate: int | None = None

    @property
    def ref(self) -> str:
        return f"{MEDIA_DIR}/{self.sha256}.{self.format}"

    def manifest_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.ref, "sha256": self.sha256, "bytes": self.size,
                                 "modality": self.modality, "format": self.format}
        if self.modality == "image":
            entry.update(width=self.width, height=self.height)
        else:
            entry.update(duration_s=self.duration_s, sample_rate=self.sample_rate)
        return entry

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any], folder: Path) -> "MediaFile":
        return cls(sha256=entry["sha256"], size=entry["bytes"], modality=entry["modality"], format=entry["format"],
                   source=folder / entry["path"], width=entry.get("width"), height=entry.get("height"),
                   duration_s=entry.get("duration_s"), sample_rate=entry.get("sample_rate"))


def probe_image(data: bytes, limits: MediaLimits) -> dict[str, Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # structure and checksums; the image cannot be used after it
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
            if kind not in IMAGE_FORMATS:
                raise MediaError(f"is a {kind} image; accepted image formats: PNG, JPEG, WebP, GIF (first frame)")
            if max(width, height) > limits.image_max_side:
                raise MediaError(f"image is {width}x{height} px; the longest side may be "
                                 f"{limits.image_max_side} px (data.media.image_max_side)")
            image.load()  # verify() leaves the pixel data unread: a truncated JPEG passes it
    except MediaError:
        raise
    except UnidentifiedImageError:
        raise MediaError("is not an image (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"image does not decode: {exc}") from None
    return {"format": IMAGE_FORMATS[kind], "width": width, "height": height}


def probe_audio(data: bytes, limits: MediaLimits) -> dict[str, Any]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            names = container.format.name.split(",")
            kind = next((AUDIO_FORMATS[n] for n in names if n in AUDIO_FORMATS), None)
            if kind is None:
                raise MediaError(f"is {container.format.long_name or names[0]}; accepted audio formats: "
                                 "WAV, FLAC, MP3, OGG")
            if not container.streams.audio:
                raise MediaError("holds no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.sample_rate
            samples = 0
            # Decoding every frame both proves the file plays and gives an exact length, where the
            # header's duration is an estimate for MP3 and absent for some OGG files.
            for frame in container.decode(stream):
                samples += frame.samples
                if rate and samples / rate > limits.audio_max_seconds:
                    raise MediaError(f"audio is longer than {limits.audio_max_seconds:g} s "
                                     "(data.media.audio_max_seconds)")
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise MediaError(f"audio does not decode: {exc}") from None
    if not rate or not samples:
        raise MediaError("audio holds no decodable samples")
    return {"format": kind, "duration_s": round(samples / rate, 6), "sample_rate": int(rate)}


PROBES = {"image": probe_image, "audio": probe_audio}


def _limit_bytes(modality: str, limits: MediaLimits) -> tuple[int, str]:
    mb = limits.image_max_mb if modality == "image" else limits.audio_max_mb
    return int(mb * MIB), f"{mb:g} MiB (data.media.{modality}_max_mb)"


def _size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n:,} bytes"


class MediaCollector:
    """The media of one import: each distinct file checked once, keyed by its stored reference."""

    def __init__(self, limits: MediaLimits | None = None) -> None:
        self.limits = limits or MediaLimits()
        self.files: dict[str, MediaFile] = {}
        self._by_sha: dict[str, MediaFile] = {}

    def add(self, source: Path | bytes, modality: str) -> MediaFile:
        """Check one part's media (a file path or inline bytes); raises ``MediaError`` saying what is wrong."""
        limit, shown = _limit_bytes(modality, self.limits)
        if isinstance(source, Path):
            if not source.is_file():
                raise MediaError(f"file not found: {source}" if not source.exists() else f"is not a file: {source}")
            size = source.stat().st_size
            if size > limit:  # before reading it: a stray multi-gigabyte file is refused cheaply
                raise MediaError(f"{modality} file is {_size(size)}; the limit is {shown}")
            data = source.read_bytes()
        else:
            data = source
        if len(data) > limit:
            raise MediaError(f"{modality} is {_size(len(data))}; the limit is {shown}")
        if not data:
            raise MediaError(f"{modality} is empty (0 bytes)")
        sha = hashlib.sha256(data).hexdigest()
        known = self._by_sha.get(sha)
        if known is not None:
            if known.modality != modality:
                raise MediaError(f"the same file is used as {known.modality} elsewhere; it cannot be {modality} too")
            return known
        facts = PROBES[modality](data, self.limits)
        media = MediaFile(sha256=sha, size=len(data), modality=modality,
                          source=source if isinstance(source, Path) else data, **facts)
        self._by_sha[sha] = media
        self.files[media.ref] = media
        return media

    def contents(self) -> dict[str, bytes]:
        """Each checked file's bytes by reference: what is read from them at inference (the server,
        `generate`), where no dataset version is written. A file whose bytes changed since it was
        checked is refused, as ``store_media`` refuses it: the model reads only what passed the limits."""
        out = {}
        for ref, media in self.files.items():
            if isinstance(media.source, bytes):  # inline bytes (a request's data URL) cannot change
                out[ref] = media.source
                continue
            data = media.source.read_bytes()
            if hashlib.sha256(data).hexdigest() != media.sha256:
                raise TunewrightError("changed after it was checked; run again", file=media.source)
            out[ref] = data
        return out


def store_media(files: Iterable[MediaFile], folder: Path) -> None:
    """Copy each file into ``folder/media/`` under its reference, refusing one whose bytes changed
    since they were checked. ``folder`` is the version's temporary folder, synced and renamed as a whole."""
    for media in files:
        target = folder / media.ref
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(media.source, bytes):
            target.write_bytes(media.source)
            continue
        digest = hashlib.sha256()
        with open(media.source, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(MIB):
                digest.update(chunk)
                dst.write(chunk)
        if digest.hexdigest() != media.sha256:
            raise TunewrightError("changed while the dataset was being imported; import it again", file=media.source)


def media_in_version(folder: str | Path) -> dict[str, MediaFile]:
    """The media a stored dataset version holds, by reference, read from its manifest: a dataset
    derived from this one's part rows passes it to ``prepare_rows`` so the files come along."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise NotFoundError("dataset version has no manifest", file=manifest)
    entries = json.loads(manifest.read_text(encoding="utf-8")).get("media", [])
    return {entry["path"]: MediaFile.from_manifest(entry, folder) for entry in entries}


def media_path(folder: str | Path, ref: str) -> Path:
    """Where a row's media reference lies inside its dataset version folder."""
    path = Path(folder) / ref
    if not path.is_file():
        raise NotFoundError("media file of the dataset version is missing", file=path)
    return path
