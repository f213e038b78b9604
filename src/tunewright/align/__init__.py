"""Alignment of image and audio parts to text: OCR of images and transcription of audio with real
models, offline, cached by content hash, with the engine and settings recorded as provenance."""

from . import asr, ocr  # noqa: F401 - registers the built-in engines
from .cache import Aligned, align, aligned_text, cache_key
from .corrections import Correction, CorrectionStore
from .engines import ALIGNERS, DEFAULT_ENGINES, AlignEngine, EngineResult, Provenance, register_aligner
from .render import ALIGNED_LAYOUT, render_aligned

__all__ = [
    "ALIGNED_LAYOUT", "ALIGNERS", "DEFAULT_ENGINES", "AlignEngine", "Aligned", "Correction", "CorrectionStore",
    "EngineResult", "Provenance", "align", "aligned_text", "cache_key", "register_aligner", "render_aligned",
]
