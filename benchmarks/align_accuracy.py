"""How well alignment reads the shipped Peachtree media: OCR character error rate on the price tags,
OCR recall of the checkout error banner on the screenshots, and transcription word error rate on the
voice messages, per split, against what the generator drew and spoke (its manifest.json).

The eval split uses fonts, voices and noise levels that training never saw, so its numbers are the
ones a new customer's file would get. Engines run directly with the settings given (no cache).
Error rates come from jiwer, averaged per file; text is compared lower-cased with punctuation and runs
of spaces folded.

Usage: python benchmarks/align_accuracy.py [--media examples/peachtree/media] [--recipe FILE]
(--recipe: take align settings from a recipe, e.g. the media demo's initial prompt)
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import jiwer
import yaml

from tunewright.align import ALIGNERS
from tunewright.align.engines import engine_settings

ROOT = Path(__file__).resolve().parents[1]


def normal(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9$.@-]+", text.lower().replace(",", ""))).strip(" .")


def banner_error(banner: list[str], lines: list[str]) -> float:
    """CER of each banner line against the OCR line closest to it, weighted by length: the banner
    is what a customer asks about, and the rest of the page has no recorded ground truth."""
    errors = chars = 0
    for wanted in map(normal, banner):
        best = min((jiwer.cer(wanted, normal(line)) for line in lines), default=1.0)
        errors += min(best, 1.0) * len(wanted)
        chars += len(wanted)
    return errors / chars


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--media", type=Path, default=ROOT / "examples" / "peachtree" / "media")
    parser.add_argument("--recipe", type=Path, default=None)
    args = parser.parse_args()
    settings = {}
    if args.recipe is not None:
        settings = (yaml.safe_load(args.recipe.read_text()) or {}).get("align") or {}
    ocr, asr = ALIGNERS.get("ocr"), ALIGNERS.get("asr")
    ocr_settings = engine_settings("ocr", settings.get("ocr") or {})
    asr_settings = engine_settings("asr", settings.get("asr") or {})
    manifest = json.loads((args.media / "manifest.json").read_text())
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    for entry in manifest["files"]:
        path, key = args.media / entry["path"], (entry["kind"], entry["split"])
        start = time.perf_counter()
        if entry["kind"] == "audio":
            heard = asr.run(path, asr_settings).text
            scores[key].append(jiwer.wer(normal(entry["text"]), normal(heard) or "-"))
            seconds["audio"] += time.perf_counter() - start
            if entry["split"] == "eval":
                print(f"  {entry['voice']:>22} {entry['snr_db']} dB | {entry['text']} | {heard}")
        else:
            lines = [line.text for line in ocr.run(path, ocr_settings).lines]
            if entry["kind"] == "label":
                scores[key].append(jiwer.cer(normal(" ".join(entry["lines"])), normal(" ".join(lines)) or "-"))
            else:
                scores[key].append(banner_error(entry["banner"], lines))
            seconds["image"] += time.perf_counter() - start
    names = {"label": "price tags: OCR CER", "screenshot": "screenshots: OCR CER of the error banner",
             "audio": "voice messages: ASR WER"}
    print(f"\nsettings: ocr {ocr_settings.model_dump()}, asr {asr_settings.model_dump()}")
    print(f"{'':44} {'train':>7} {'eval':>7}")
    for kind, name in names.items():
        cells = [sum(scores[kind, split]) / len(scores[kind, split]) for split in ("train", "eval")]
        print(f"{name:44} {cells[0]:7.3f} {cells[1]:7.3f}")
    n_images = sum(len(v) for (kind, _), v in scores.items() if kind != "audio")
    audio_s = sum(e["duration_s"] for e in manifest["files"] if e["kind"] == "audio")
    print(f"time: {seconds['image'] / n_images:.2f} s per image, {seconds['audio'] / audio_s:.3f} s per audio second")


if __name__ == "__main__":
    main()
