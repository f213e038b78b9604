"""Alignment speed on this machine's CPU: seconds per OCR call on a 600x200 screenshot-like image,
and seconds of compute per second of audio for transcription (speech synthesised with espeak-ng).

Engines are called directly (no cache), after one warm-up call so model loading is reported apart.
Usage: python benchmarks/align_speed.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
import wave
from pathlib import Path

from tunewright.align import ALIGNERS
from tunewright.align.engines import engine_settings

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SCREEN = [((20, 20), "Order #4471 - Ridgeback 2 Tent", 22), ((20, 62), "Price: $189.00   Qty: 1", 18),
          ((20, 100), "Ships Monday from Portland", 18), ((380, 100), "Status: packed", 18),
          ((20, 150), "Questions? Reply to this email.", 16)]
SPEECH = ("Hi, I ordered the Ridgeback two tent last week and it still has not shipped. "
          "The order number is four four seven one. Can you tell me when it will arrive, "
          "and whether I can still change the colour to green?")


def screenshot(path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (600, 200), (248, 248, 244))
    draw = ImageDraw.Draw(image)
    for origin, text, size in SCREEN:
        draw.text(origin, text, font=ImageFont.truetype(FONT, size), fill=(30, 30, 50))
    image.save(path)


def timed(engine, path: Path, values: dict, repeats: int) -> tuple[float, float, object]:
    settings = engine_settings(engine.name, values)
    start = time.perf_counter()
    result = engine.run(path, settings)  # includes loading the model on first use
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        result = engine.run(path, settings)
    return first, (time.perf_counter() - start) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "screen.png"
        screenshot(image)
        ocr = ALIGNERS.get("ocr")
        for values in ({}, {"restore_spaces": False}, {"use_angle_classifier": True}):
            first, per_call, result = timed(ocr, image, values, args.repeats)
            print(f"ocr {values or 'defaults'}: first call {first:.2f} s, then {per_call:.2f} s per call "
                  f"(600x200, {len(result.lines)} lines)")
        print("ocr text:\n  " + result.text.replace("\n", "\n  "))

        if shutil.which("espeak-ng") is None:
            print("asr: skipped (espeak-ng missing; scripts/ensure-espeak.sh installs it)")
            return
        speech = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(speech), SPEECH], check=True)
        with wave.open(str(speech)) as w:
            seconds = w.getnframes() / w.getframerate()
        asr = ALIGNERS.get("asr")
        for values in ({}, {"word_timestamps": True}, {"beam_size": 1}):
            first, per_call, result = timed(asr, speech, values, args.repeats)
            print(f"asr {values or 'defaults'}: {seconds:.1f} s of audio, first call {first:.2f} s, then "
                  f"{per_call:.2f} s per call = {per_call / seconds:.3f} s per audio second")
        print(f"asr text: {result.text}")


if __name__ == "__main__":
    main()
