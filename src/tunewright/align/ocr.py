"""OCR of image parts with RapidOCR (PP-OCRv4 ONNX models shipped inside the rapidocr-onnxruntime wheel).

Nothing is downloaded. The engine object loads three ONNX sessions, which takes seconds, so one is
built per process and reused; every call passes its thresholds explicitly because RapidOCR keeps
per-call options on the shared object.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import TunewrightError
from ..io import sha256_file
from .engines import AlignEngine, EngineResult, register_aligner

Point = tuple[float, float]


class OcrSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Lines the recogniser is less sure of are dropped: on screenshots they are mostly icons and
    # texture read as stray letters.
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    # Off by default: the classifier only detects text turned 180 degrees, which screenshots and
    # product photos do not have, and it costs a pass over every line.
    use_angle_classifier: bool = False
    # The bundled recogniser is trained mostly on Chinese and often drops the spaces between
    # English words ("Ridgebacktentcosts189dollars"); see restore_spaces.
    restore_spaces: bool = True


class OcrLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    box: list[Point]  # four corners, clockwise from top-left, in image pixels
    confidence: float

    @property
    def top(self) -> float:
        return min(y for _, y in self.box)

    @property
    def bottom(self) -> float:
        return max(y for _, y in self.box)

    @property
    def left(self) -> float:
        return min(x for x, _ in self.box)

    @property
    def centre_y(self) -> float:
        return (self.top + self.bottom) / 2


class OcrResult(EngineResult):
    lines: list[OcrLine]  # in reading order
    width: int
    height: int


def reading_rows(lines: list[OcrLine]) -> list[list[OcrLine]]:
    """Lines grouped into rows (top to bottom), each row left to right.

    RapidOCR orders boxes by their top edge with a fixed 10-pixel tie rule, so two columns on one
    visual row come out in either order depending on a pixel of baseline, and a larger font on the
    right starts higher and jumps ahead of the text on its left. Grouping boxes whose vertical
    extents hold each other's centres scales with the text height instead. Each row is compared
    with its first box only, so a slightly skewed page does not chain every line into one row.
    """
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: (ln.centre_y, ln.left)):
        if rows:
            anchor = rows[-1][0]
            if anchor.top <= line.centre_y <= anchor.bottom or line.top <= anchor.centre_y <= line.bottom:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda ln: ln.left) for row in rows]


def join_rows(rows: list[list[OcrLine]]) -> str:
    """One text line per row; boxes of one row (columns, or a line the detector split) joined by a space."""
    return "\n".join(" ".join(line.text for line in row) for row in rows)


# A blank run of columns at least this share of the line's ink height is a word break. Measured on
# DejaVu Sans, Serif and Sans Condensed at 14-28 px (72 rendered lines): 0.3 put back the spaces the
# recogniser dropped in 66 lines exactly (it had 37) and split no word; 0.22 split "dol lars", because
# the gap inside "ll" reaches a fifth of the ink height. The misses left are all spaces not put back.
WORD_GAP = 0.3


def restore_spaces(gray: Any, box: list[Point], chars: list[str], char_boxes: list[Any]) -> str | None:
    """The line's characters with a space wherever the image shows a word gap between two of them
    that the recogniser joined; None when the line is not one this can measure (tilted, or the
    character positions do not match the text)."""
    import cv2
    import numpy as np

    if not chars or len(chars) != len(char_boxes):
        return None
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    x0, x1 = int(max(min(xs), 0)), int(min(max(xs), gray.shape[1]))
    y0, y1 = int(max(min(ys), 0)), int(min(max(ys), gray.shape[0]))
    if x1 - x0 < 2 or y1 - y0 < 2 or abs(box[1][1] - box[0][1]) > 0.1 * (x1 - x0):
        return None
    crop = np.ascontiguousarray(gray[y0:y1, x0:x1])
    _, binary = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    dark = binary == 0
    ink = dark if dark.sum() < dark.size / 2 else ~dark  # text covers less of a line than its background
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return None
    min_gap = WORD_GAP * (rows[-1] - rows[0] + 1)
    inked = ink.any(axis=0)
    gaps, start = [], None
    for col, has_ink in enumerate([*inked, True]):
        if not has_ink and start is None:
            start = col
        elif has_ink and start is not None:
            if start > 0 and col < len(inked) and col - start >= min_gap:  # inner gaps only
                gaps.append(x0 + (start + col) / 2)
            start = None
    centres = [sum(p[0] for p in b) / len(b) for b in char_boxes]
    out = chars[0]
    for i in range(1, len(chars)):
        if chars[i] != " " and chars[i - 1] != " " and any(centres[i - 1] < g < centres[i] for g in gaps):
            out += " "
        out += chars[i]
    return out


@functools.lru_cache(maxsize=1)
def _engine() -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


@functools.lru_cache(maxsize=1)
def _model_identity() -> str:
    import rapidocr_onnxruntime

    models = sorted((Path(rapidocr_onnxruntime.__file__).parent / "models").glob("*.onnx"))
    return ", ".join(f"{m.name}@{sha256_file(m)[:16]}" for m in models)


def load_rgb(path: Path) -> Any:
    """The image as an RGB array, or one error naming the file: PIL decodes fully here, so a
    truncated file fails now rather than inside the detector."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                # Transparent pixels keep whatever colour they hide (often black, like the text):
                # paint them white, as a viewer would show them.
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
            else:
                rgb = img.convert("RGB")
    except FileNotFoundError:
        raise TunewrightError("image file not found", file=path) from None
    except Exception as exc:  # noqa: BLE001 - PIL reports bad data through many exception types
        raise TunewrightError(f"cannot decode image: {exc}", file=path) from None
    return np.asarray(rgb)


@register_aligner
class OcrEngine(AlignEngine):
    name = "ocr"
    modality = "image"
    package = "rapidocr-onnxruntime"
    Settings = OcrSettings
    Result = OcrResult

    def model_identity(self, settings: BaseModel) -> str:
        return _model_identity()

    def run(self, path: Path, settings: BaseModel) -> OcrResult:
        assert isinstance(settings, OcrSettings)
        rgb = load_rgb(path)
        height, width = rgb.shape[:2]
        # RapidOCR takes arrays in OpenCV's BGR order. text_score 0: the threshold is applied
        # below, with the setting, rather than by the library's default of 0.5. The word boxes
        # (per-character positions) are what restore_spaces needs.
        found, _ = _engine()(rgb[:, :, ::-1].copy(), use_cls=settings.use_angle_classifier, text_score=0.0,
                             box_thresh=0.5, unclip_ratio=1.6, return_word_box=settings.restore_spaces)
        gray = rgb.mean(axis=2).astype("uint8") if settings.restore_spaces else None
        lines = []
        for box, text, score, *positions in found or []:
            corners = [(float(x), float(y)) for x, y in box]
            if settings.restore_spaces and len(positions) >= 2:
                text = restore_spaces(gray, corners, list(positions[1]), list(positions[0])) or text
            text = " ".join(str(text).split())
            if float(score) >= settings.min_confidence and text:
                lines.append(OcrLine(text=text, box=corners, confidence=float(score)))
        rows = reading_rows(lines)
        return OcrResult(text=join_rows(rows), lines=[line for row in rows for line in row],
                         width=width, height=height)
