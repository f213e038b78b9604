"""Alignment of media parts: real OCR on text we render, real transcription of speech we synthesise,
the cache and corrections through a counting fake engine, the aligned-v1 layout, and bad input."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
import subprocess
import wave
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from tunewright.align import (
    ALIGNED_LAYOUT,
    AlignEngine,
    CorrectionStore,
    EngineResult,
    align,
    aligned_text,
    register_aligner,
    render_aligned,
)
from tunewright.align.ocr import OcrLine, reading_rows
from tunewright.errors import TunewrightError

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


# --- a counting fake engine: the cache and corrections without a real model ----------------------

class FakeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suffix: str = ""


@register_aligner
class FakeUpper(AlignEngine):
    """Reads a text file and shouts it: the expected output is obvious from the input."""

    name = "fake-upper"
    modality = "image"
    package = "pydantic"  # any installed distribution: its version is what gets recorded
    Settings = FakeSettings
    Result = EngineResult
    calls: ClassVar[int] = 0
    weights: ClassVar[str] = "fake-weights-v1"

    def model_identity(self, settings: BaseModel) -> str:
        return FakeUpper.weights

    def run(self, path: Path, settings: BaseModel) -> EngineResult:
        assert isinstance(settings, FakeSettings)
        FakeUpper.calls += 1
        return EngineResult(text=path.read_text().upper() + settings.suffix)


@pytest.fixture
def fake(tmp_path):
    FakeUpper.calls, FakeUpper.weights = 0, "fake-weights-v1"
    media = tmp_path / "media.txt"
    media.write_text("tent 189")
    return media, tmp_path / "cache"


def test_second_call_reads_the_cache_and_a_changed_setting_or_file_reruns(fake):
    media, cache = fake
    first = align(media, "fake-upper", cache)
    assert first.text == "TENT 189" and FakeUpper.calls == 1
    sha = hashlib.sha256(b"tent 189").hexdigest()
    [stored] = (cache / "fake-upper").iterdir()
    assert stored.name.startswith(sha + ".") and stored.suffix == ".json"
    assert json.loads(stored.read_text())["provenance"]["engine"] == "fake-upper"

    again = align(media, "fake-upper", cache)
    assert again.text == "TENT 189" and FakeUpper.calls == 1  # read, not run
    assert again.provenance.model == "fake-weights-v1" and again.provenance.version

    assert align(media, "fake-upper", cache, {"suffix": "!"}).text == "TENT 189!"
    assert FakeUpper.calls == 2
    assert align(media, "fake-upper", cache).text == "TENT 189" and FakeUpper.calls == 2  # both kept

    FakeUpper.weights = "fake-weights-v2"  # a new model reruns, as a new package version would
    align(media, "fake-upper", cache)
    assert FakeUpper.calls == 3

    media.write_text("stove 42")
    assert align(media, "fake-upper", cache).text == "STOVE 42" and FakeUpper.calls == 4


@pytest.mark.parametrize("damage", ["{not json", '{"format": 1}', "null", "", "WRONG_KEY"])
def test_a_damaged_cache_file_is_recomputed_and_replaced(fake, damage):
    media, cache = fake
    align(media, "fake-upper", cache)
    [stored] = (cache / "fake-upper").iterdir()
    if damage == "WRONG_KEY":  # valid JSON, but another entry's: a copied or renamed file
        entry = json.loads(stored.read_text())
        entry["result"]["text"] = "STALE"
        entry["key"] = "0" * 64 + ".0"
        stored.write_text(json.dumps(entry))
    else:
        stored.write_text(damage)
    assert align(media, "fake-upper", cache).text == "TENT 189"
    assert FakeUpper.calls == 2
    assert json.loads(stored.read_text())["result"]["text"] == "TENT 189"
    align(media, "fake-upper", cache)
    assert FakeUpper.calls == 2


def test_a_correction_wins_over_the_engine_and_records_who_and_when(fake):
    media, cache = fake
    assert aligned_text(media, "fake-upper", cache) == "TENT 189" and FakeUpper.calls == 1
    sha = hashlib.sha256(media.read_bytes()).hexdigest()
    store = CorrectionStore(cache)
    store.set(sha, "fake-upper", "Tent: $189", by="ana")
    assert aligned_text(media, "fake-upper", cache) == "Tent: $189"
    assert aligned_text(media, "fake-upper", cache, {"suffix": "?"}) == "Tent: $189"  # whatever the settings
    assert FakeUpper.calls == 1  # a corrected file does not need the engine
    [saved] = json.loads((cache / "corrections.json").read_text())["corrections"]
    assert saved["by"] == "ana" and saved["text"] == "Tent: $189" and saved["at"].startswith("20")
    assert store.remove(sha, "fake-upper") and not store.remove(sha, "fake-upper")
    assert aligned_text(media, "fake-upper", cache) == "TENT 189"


def test_aligned_layout_joins_text_and_marked_media_blocks_in_part_order(fake, tmp_path):
    media, cache = fake
    clip = tmp_path / "clip.txt"
    clip.write_text("ships monday")
    files = {"media/aa.png": media, "media/bb.wav": clip}
    parts = [{"type": "text", "text": "What does the label say?"},
             {"type": "image", "image": "media/aa.png"},
             {"type": "audio", "audio": "media/bb.wav"},
             {"type": "text", "text": "Thanks."}]
    rendered = render_aligned(parts, files.__getitem__, cache, engines={"image": "fake-upper", "audio": "fake-upper"})
    assert rendered == ("What does the label say?\n\n"
                        "[image text]\nTENT 189\n[/image text]\n\n"
                        "[audio transcript]\nSHIPS MONDAY\n[/audio transcript]\n\n"
                        "Thanks.")
    assert ALIGNED_LAYOUT == "aligned-v1"
    assert render_aligned("plain text stays", files.__getitem__, cache) == "plain text stays"
    CorrectionStore(cache).set(hashlib.sha256(b"ships monday").hexdigest(), "fake-upper", "Ships Monday.", by="bo")
    assert "[audio transcript]\nShips Monday.\n[/audio transcript]" in render_aligned(
        parts, files.__getitem__, cache, engines={"image": "fake-upper", "audio": "fake-upper"})


# --- reading order: hand-made boxes --------------------------------------------------------------

def _line(text, left, top, width, height):
    return OcrLine(text=text, box=[(left, top), (left + width, top), (left + width, top + height),
                                   (left, top + height)], confidence=0.9)


def test_reading_rows_group_by_vertical_overlap_then_left_to_right():
    title = _line("Big price", 300, 10, 200, 40)  # larger font on the right, starts higher
    label = _line("Tent", 20, 18, 80, 22)
    second = _line("Order 4471", 20, 80, 120, 22)
    column = _line("Ships Monday", 300, 83, 150, 22)  # a second column, baseline 3 px lower
    rows = reading_rows([column, second, title, label])
    assert [[ln.text for ln in row] for row in rows] == [["Tent", "Big price"], ["Order 4471", "Ships Monday"]]
    # A staircase of lines each overlapping the next is not chained into one row.
    stairs = [_line(f"s{i}", 20 + 100 * i, 10 + 15 * i, 90, 22) for i in range(4)]
    assert len(reading_rows(stairs)) >= 2


# --- real OCR on rendered text -------------------------------------------------------------------

DRAWN = [((20, 30), "Ridgeback tent costs 189 dollars"), ((20, 110), "Order number 4471"),
         ((380, 114), "Ships Monday")]  # reading order: row 1; row 2 left column, then right column


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT, 22)
    image = Image.new("RGB", (600, 200), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    boxes = []
    for origin, text in DRAWN:
        draw.text(origin, text, font=font, fill=(30, 30, 60))
        boxes.append(draw.textbbox(origin, text, font=font))
    path = tmp_path_factory.mktemp("ocr") / "shot.png"
    image.save(path)
    return path, boxes


def _squash(text):
    return re.sub(r"\s+", "", text).lower()


def test_ocr_reads_rendered_text_in_reading_order_with_boxes_where_it_was_drawn(screenshot, tmp_path):
    path, drawn_boxes = screenshot
    result = align(path, "ocr", tmp_path).result
    squashed = _squash(result.text)
    positions = [squashed.find(_squash(text)) for _, text in DRAWN]
    assert all(p >= 0 for p in positions), result.text
    assert positions == sorted(positions), result.text  # row by row, left column before right
    assert [_squash(row) for row in result.text.splitlines()] == [_squash(DRAWN[0][1]),
                                                                  _squash(DRAWN[1][1] + DRAWN[2][1])]
    # The recogniser runs words together; restore_spaces puts back the gaps the image shows.
    assert result.text.splitlines() == ["Ridgeback tent costs 189 dollars", "Order number 4471 Ships Monday"]
    assert len(result.lines) == 3 and (result.width, result.height) == (600, 200)
    for line, (left, top, right, bottom) in zip(result.lines, drawn_boxes):
        xs, ys = [x for x, _ in line.box], [y for _, y in line.box]
        assert abs(min(xs) - left) <= 8 and abs(max(xs) - right) <= 8, (line, (left, top, right, bottom))
        assert abs(min(ys) - top) <= 8 and abs(max(ys) - bottom) <= 8, (line, (left, top, right, bottom))
        assert 0.5 <= line.confidence <= 1.0


def test_ocr_min_confidence_drops_lines_below_it(screenshot, tmp_path):
    path, _ = screenshot
    everything = align(path, "ocr", tmp_path, {"min_confidence": 0.0}).result
    cut = sorted(line.confidence for line in everything.lines)[1]  # keeps all but the least sure
    kept = align(path, "ocr", tmp_path, {"min_confidence": cut}).result
    assert [ln.text for ln in kept.lines] == [ln.text for ln in everything.lines if ln.confidence >= cut]
    assert len(kept.lines) == len(everything.lines) - 1


# --- real transcription of synthesised speech ----------------------------------------------------

def _wav_seconds(path):
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing (scripts/ensure-espeak.sh installs it)")
def test_asr_transcribes_a_spoken_sentence_with_times_inside_the_audio(tmp_path):
    speech = tmp_path / "say.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "130", "-w", str(speech),
                    "the tent costs one hundred eighty nine dollars"], check=True, capture_output=True)
    seconds = _wav_seconds(speech)
    result = align(speech, "asr", tmp_path / "cache", {"word_timestamps": True}).result
    words = re.sub(r"[^a-z0-9 ]", " ", result.text.lower().replace("-", " ")).split()
    assert {"tent", "dollars"} <= set(words), result.text
    assert "189" in words or {"hundred", "eighty", "nine"} <= set(words), result.text
    assert result.language == "en" and abs(result.duration_s - seconds) < 0.01
    assert result.segments and [s.start for s in result.segments] == sorted(s.start for s in result.segments)
    for segment in result.segments:
        assert 0.0 <= segment.start <= segment.end <= seconds + 1e-6
        assert segment.words and all(segment.start - 0.01 <= w.start <= w.end <= segment.end + 0.01
                                     for w in segment.words)
    timed = [w for s in result.segments for w in s.words or []]
    said = [w.word.lower().strip(".,") for w in timed]
    assert said.index("tent") < said.index("dollars")
    assert timed[said.index("tent")].end <= timed[said.index("dollars")].start


def test_asr_initial_prompt_brings_a_rare_name_through(tmp_path):
    """The shipped Peachtree clip of "How much is the Ridgeback 2 Tent?" (its manifest's text): tiny.en
    hears "ridge back to 10" on its own and the product name once the prompt names the catalog."""
    clip = Path(__file__).resolve().parents[1] / "examples" / "peachtree" / "media" / "audio" / "audio-train-000.flac"
    plain = align(clip, "asr", tmp_path / "a", {}).result.text
    prompted = align(clip, "asr", tmp_path / "b", {"initial_prompt": "Peachtree Outfitters: Ridgeback 2 Tent, "
                                                                      "Summit Down Jacket."}).result.text
    assert "Ridgeback 2 Tent" not in plain and "Ridgeback 2 Tent" in prompted, (plain, prompted)


def _write_wav(path, samples, rate=16_000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))


def test_asr_on_a_tone_and_silence_keeps_its_structure(tmp_path):
    rate = 16_000
    tone = tmp_path / "tone.wav"
    _write_wav(tone, [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(2 * rate)] + [0] * rate)
    silence = tmp_path / "silence.wav"
    _write_wav(silence, [0] * (2 * rate))
    # Whisper alone may invent words on non-speech ("You" on silence), so only the structure is
    # checked; with voice detection (the default) digital silence holds no speech at all.
    for path, seconds, settings in ((tone, 3.0, {}), (silence, 2.0, {"vad_filter": False})):
        result = align(path, "asr", tmp_path / "cache", settings).result
        assert abs(result.duration_s - seconds) < 0.01
        assert [s.start for s in result.segments] == sorted(s.start for s in result.segments)
        assert all(0.0 <= s.start <= s.end <= seconds for s in result.segments)
        assert all(s.words is None for s in result.segments)  # word times only when asked
        assert result.text == " ".join(s.text for s in result.segments if s.text)
    quiet = align(silence, "asr", tmp_path / "cache").result
    assert quiet.segments == [] and quiet.text == ""


# --- bad input: one line naming the file or setting ---------------------------------------------

def _one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_an_image_that_does_not_decode_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(TunewrightError) as caught:
        align(bad, "ocr", tmp_path / "cache")
    message = _one_line(caught)
    assert message.startswith(str(bad)) and "cannot decode image" in message
    assert not (tmp_path / "cache" / "ocr").exists() or not any((tmp_path / "cache" / "ocr").iterdir())


def test_an_audio_file_that_does_not_decode_is_named(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    with pytest.raises(TunewrightError) as caught:
        align(bad, "asr", tmp_path / "cache")
    message = _one_line(caught)
    assert message.startswith(str(bad)) and "cannot decode audio" in message


def test_a_missing_model_folder_names_the_setting(tmp_path):
    clip = tmp_path / "clip.wav"
    _write_wav(clip, [0] * 16_000)
    missing = tmp_path / "no-such-model"
    with pytest.raises(TunewrightError) as caught:
        align(clip, "asr", tmp_path / "cache", {"model_dir": str(missing)})
    message = _one_line(caught)
    assert "field 'align.asr.model_dir'" in message and str(missing) in message and "does not exist" in message
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(TunewrightError, match="has no model.bin"):
        align(clip, "asr", tmp_path / "cache", {"model_dir": str(empty)})


def test_other_bad_input_is_named(fake, tmp_path):
    media, cache = fake
    with pytest.raises(TunewrightError, match=r"missing\.png: media file not found"):
        align(tmp_path / "missing.png", "fake-upper", cache)
    with pytest.raises(TunewrightError, match=r"field 'align': unknown aligner 'tesseract'"):
        align(media, "tesseract", cache)
    with pytest.raises(TunewrightError, match=r"field 'align\.ocr\.dpi': unknown setting"):
        align(media, "ocr", cache, {"dpi": 300})
    with pytest.raises(TunewrightError, match=r"field 'align\.ocr\.min_confidence'"):
        align(media, "ocr", cache, {"min_confidence": 2})
    with pytest.raises(TunewrightError, match=r"field 'content\[1\]\.type': unknown part type 'video'"):
        render_aligned([{"type": "text", "text": "hi"}, {"type": "video", "video": "media/x.mp4"}],
                       lambda ref: media, cache)
    with pytest.raises(TunewrightError, match=r"field 'content\[0\]\.image'"):
        render_aligned([{"type": "image"}], lambda ref: media, cache)
    with pytest.raises(TunewrightError, match="reviewer's name"):
        CorrectionStore(cache).set("ab" * 32, "ocr", "text", by=" ")
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "corrections.json").write_text("{broken")
    with pytest.raises(TunewrightError) as caught:
        aligned_text(media, "fake-upper", cache)
    assert _one_line(caught).startswith(str(cache / "corrections.json")) and "does not read" in str(caught.value)
