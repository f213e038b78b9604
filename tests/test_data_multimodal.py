"""Chat rows with image and audio parts: import shapes, validation, content-addressed storage, the
manifest, stats, and the text-only stages refusing part rows. Media is made here with Pillow and the
``wave`` module, so every expected size, duration and hash is known independently of the code."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import statistics
import struct
import wave
from pathlib import Path

import pytest
from PIL import Image

from helpers import init_cli_workspace, run_cli as run, write_jsonl
from tunewright.config import MediaLimits
from tunewright.data.media import media_in_version
from tunewright.data.pii_scan import scan_rows
from tunewright.data.prepare import load_rows, prepare_dataset, read_split, write_dataset_version
from tunewright.data.schema import ChatRow, Message
from tunewright.data.stats import media_stats
from tunewright.data.tokenize import encode_chat
from tunewright.errors import TunewrightError

FIXTURES = Path(__file__).parent / "fixtures_data"


# --- media made here -----------------------------------------------------------------------------


def png(path: Path, width: int, height: int, colour=(200, 30, 30)) -> bytes:
    Image.new("RGB", (width, height), colour).save(path, format="PNG")
    return path.read_bytes()


def jpeg(path: Path, width: int, height: int) -> bytes:
    Image.new("RGB", (width, height), (20, 90, 200)).save(path, format="JPEG", quality=90)
    return path.read_bytes()


def wav(path: Path, seconds: float, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A mono 16-bit sine: ``seconds * rate`` samples, so its duration is exactly ``seconds``."""
    n = round(seconds * rate)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate)))
                                 for i in range(n)))
    return path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref(data: bytes, ext: str) -> str:
    return f"media/{sha(data)}.{ext}"


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat(user_content, answer="Fine.") -> dict:
    return {"messages": [{"role": "user", "content": user_content}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def media(tmp_path):
    """A data folder with a 40x30 PNG, a 64x48 JPEG and a 0.5 s WAV at 16 kHz."""
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    return {"folder": folder,
            "png": png(folder / "img" / "red.png", 40, 30),
            "jpeg": jpeg(folder / "img" / "blue.jpg", 64, 48),
            "wav": wav(folder / "tone.wav", 0.5)}


# --- accepted shapes ------------------------------------------------------------------------------


def test_every_accepted_shape_becomes_the_canonical_part(media, tmp_path, monkeypatch):
    folder, png_b, jpg_b, wav_b = media["folder"], media["png"], media["jpeg"], media["wav"]
    monkeypatch.chdir(tmp_path)  # relative paths are read from the data file's folder, not the cwd
    records = [
        chat([{"type": "image", "image": "img/red.png"}, {"type": "text", "text": "What colour is this?"}]),
        chat([{"type": "image", "url": str(folder / "img" / "blue.jpg")}]),
        chat([{"type": "image", "path": "img/red.png", "image": None, "text": None}]),  # a datasets export's nulls
        chat([{"type": "image_url", "image_url": {"url": data_url(png_b, "image/png"), "detail": "high"}}]),
        chat([{"type": "image_url", "image_url": {"url": "img/blue.jpg"}}, "and this?"]),
        chat([{"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_b).decode(), "format": "wav"}}]),
        chat([{"type": "audio", "audio": "tone.wav"}, {"type": "text", "text": "Transcribe."}]),
        chat([{"type": "audio", "path": (folder / "tone.wav").as_uri()}]),
        {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                      {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]}]},
    ]
    path = write_jsonl(folder / "rows.jsonl", records)
    rows, sources = load_rows([path])
    contents = [row.to_json()["messages"][0]["content"] for row in rows]
    image = lambda data, ext: {"type": "image", "image": ref(data, ext)}  # noqa: E731
    audio = {"type": "audio", "audio": ref(wav_b, "wav")}
    assert contents[:8] == [
        [image(png_b, "png"), {"type": "text", "text": "What colour is this?"}],
        [image(jpg_b, "jpg")],
        [image(png_b, "png")],
        [image(png_b, "png")],
        [image(jpg_b, "jpg"), {"type": "text", "text": "and this?"}],
        [audio],
        [audio, {"type": "text", "text": "Transcribe."}],
        [audio],
    ]
    # Parts that are all text are the text: one form per meaning, so dedup and text stages see a string.
    assert rows[8].to_json()["messages"] == [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Hi\n\nthere"},
                                              {"role": "assistant", "content": "Hello."}]
    assert not rows[8].has_media and rows[0].has_media
    assert rows[0].media() == [ref(png_b, "png")]
    assert sources[0]["media"] == {"count": 3, "sha256": sorted([sha(png_b), sha(jpg_b), sha(wav_b)])}


def test_parquet_datasets_struct_with_bytes(media, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = pa.struct([("type", pa.string()), ("text", pa.string()),
                      ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    message = pa.struct([("role", pa.string()), ("content", pa.list_(part))])
    table = pa.table({"messages": pa.array([[
        {"role": "user", "content": [{"type": "image", "text": None, "image": {"bytes": media["jpeg"], "path": None}},
                                     {"type": "text", "text": "Colour?", "image": None}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue.", "image": None}]},
    ]], type=pa.list_(message))})
    pq.write_table(table, tmp_path / "rows.parquet")
    (row,), _ = load_rows([tmp_path / "rows.parquet"])
    assert row.to_json()["messages"] == [
        {"role": "user", "content": [{"type": "image", "image": ref(media["jpeg"], "jpg")},
                                     {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Blue."}]


def test_a_file_is_stored_under_the_format_its_bytes_have(media):
    folder = media["folder"]
    (folder / "really_a_jpeg.png").write_bytes(media["jpeg"])
    (row,), _ = load_rows([write_jsonl(folder / "rows.jsonl", [chat([{"type": "image", "image": "really_a_jpeg.png"}])])])
    assert row.media() == [ref(media["jpeg"], "jpg")]


# --- storage, manifest, hashes ---------------------------------------------------------------------


def test_version_stores_each_file_once_with_its_facts_in_the_manifest(media, tmp_path):
    folder = media["folder"]
    (folder / "copy_of_red.png").write_bytes(media["png"])
    short = wav(folder / "short.wav", 0.25, rate=8000)
    records = [
        chat([{"type": "image", "image": "img/red.png"}, {"type": "text", "text": "one"}]),
        chat([{"type": "image", "image": "copy_of_red.png"}, {"type": "text", "text": "two"}]),  # same bytes
        chat([{"type": "image_url", "image_url": {"url": data_url(media["png"], "image/png")}}, "three"]),
        chat([{"type": "image", "image": "img/blue.jpg"}, {"type": "audio", "audio": "tone.wav"}]),
        chat([{"type": "audio", "audio": "short.wav"}]),
    ]
    prepared = prepare_dataset([write_jsonl(folder / "rows.jsonl", records)], eval_fraction=0.0)
    version = write_dataset_version(tmp_path / "datasets", prepared, {"kind": "import"})

    stored = sorted(p.name for p in (version / "media").iterdir())
    expected = {media["png"]: "png", media["jpeg"]: "jpg", media["wav"]: "wav", short: "wav"}
    assert stored == sorted(f"{sha(b)}.{ext}" for b, ext in expected.items())
    for data, ext in expected.items():
        assert (version / ref(data, ext)).read_bytes() == data  # the source's bytes, unchanged

    manifest = json.loads((version / "manifest.json").read_text())
    entries = {e["sha256"]: e for e in manifest["media"]}
    assert entries[sha(media["png"])] == {"path": ref(media["png"], "png"), "sha256": sha(media["png"]),
                                          "bytes": len(media["png"]), "modality": "image", "format": "png",
                                          "width": 40, "height": 30}
    assert (entries[sha(media["jpeg"])]["width"], entries[sha(media["jpeg"])]["height"]) == (64, 48)
    assert entries[sha(media["wav"])] == {"path": ref(media["wav"], "wav"), "sha256": sha(media["wav"]),
                                          "bytes": len(media["wav"]), "modality": "audio", "format": "wav",
                                          "duration_s": 0.5, "sample_rate": 16000}
    assert (entries[sha(short)]["duration_s"], entries[sha(short)]["sample_rate"]) == (0.25, 8000)
    assert manifest["source_files"][0]["media"]["count"] == 4
    assert read_split(version, "train") == prepared.train
    assert set(media_in_version(version)) == {ref(b, e) for b, e in expected.items()}


def test_text_rows_keep_their_keys_and_version_hash():
    # Both values were computed with the code before part rows existed (commit ccf9dc3).
    prepared = prepare_dataset([FIXTURES / "chat.jsonl", FIXTURES / "instruction.jsonl", FIXTURES / "rows.csv"],
                               eval_fraction=0.3, seed=1)
    assert prepared.content_sha256 == "9a872ba80611cacab7e48f23135ed0032e2f8878a4e59530d4581d05c7175618"
    assert prepared.media == {}
    row = ChatRow(messages=[Message(role="user", content="q"), Message(role="assistant", content="a")])
    old_key = hashlib.sha256(json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                        ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    assert row.content_key() == old_key


def test_the_version_hash_covers_the_media(tmp_path):
    hashes, keys = [], []
    for colour in ((200, 30, 30), (200, 30, 31)):  # one channel of every pixel differs
        folder = tmp_path / str(colour[2])
        folder.mkdir()
        png(folder / "a.png", 8, 8, colour)
        prepared = prepare_dataset([write_jsonl(folder / "rows.jsonl", [chat([{"type": "image", "image": "a.png"}])])],
                                   eval_fraction=0.0)
        hashes.append(prepared.content_sha256)
        keys.append(prepared.train[0].content_key())
    assert hashes[0] != hashes[1] and keys[0] != keys[1]


def test_a_file_changed_after_checking_is_refused_and_nothing_is_written(media, tmp_path):
    folder = media["folder"]
    prepared = prepare_dataset([write_jsonl(folder / "rows.jsonl", [chat([{"type": "image", "image": "img/red.png"}])])],
                               eval_fraction=0.0)
    png(folder / "img" / "red.png", 41, 30)
    with pytest.raises(TunewrightError, match="changed while the dataset was being imported") as info:
        write_dataset_version(tmp_path / "datasets", prepared, {})
    assert info.value.file == str(folder / "img" / "red.png")
    assert list((tmp_path / "datasets").iterdir()) == []


def test_bytes_read_for_inference_are_the_bytes_checked(media):
    """The server and `generate` read a part's bytes after checking them (no version is written):
    a file swapped in between is refused, so the model never reads what passed no limit."""
    from tunewright.data.media import MediaCollector

    collector = MediaCollector()
    path = media["folder"] / "img" / "swap.png"
    png(path, 40, 30)
    checked = collector.add(path, "image")
    assert collector.contents() == {checked.ref: path.read_bytes()}
    png(path, 41, 30)
    with pytest.raises(TunewrightError, match="changed after it was checked") as info:
        collector.contents()
    assert info.value.file == str(path)


# --- stats -----------------------------------------------------------------------------------------


def test_media_stats_match_hand_counts(media, tmp_path):
    folder = media["folder"]
    png(folder / "wide.png", 100, 20)
    wav(folder / "long.wav", 1.25)
    wav(folder / "tiny.wav", 0.125, rate=8000)
    records = [
        chat([{"type": "image", "image": "img/red.png"}, {"type": "text", "text": "a"}]),         # 40x30
        chat([{"type": "image", "image": "img/blue.jpg"}, {"type": "image", "image": "wide.png"}]),  # 64x48, 100x20
        chat([{"type": "image", "image": "img/red.png"}, {"type": "audio", "audio": "tone.wav"}]),  # 40x30, 0.5 s
        chat([{"type": "audio", "audio": "long.wav"}, {"type": "audio", "audio": "tiny.wav"}]),     # 1.25 s, 0.125 s
        chat("plain text"),
    ]
    prepared = prepare_dataset([write_jsonl(folder / "rows.jsonl", records)], eval_fraction=0.0)
    version = write_dataset_version(tmp_path / "datasets", prepared, {})
    stats = media_stats(read_split(version, "train"), media_in_version(version))
    assert stats.rows == 5 and stats.rows_with_media == 4
    # text: "a", the user "plain text" and five assistant answers.
    assert stats.parts == {"text": 7, "image": 4, "audio": 3}
    assert stats.files == {"image": 3, "audio": 3}
    assert (stats.image_width.min, stats.image_width.median, stats.image_width.max) == (40, 52, 100)
    assert (stats.image_height.min, stats.image_height.median, stats.image_height.max) == (20, 30, 48)
    assert stats.audio_total_s == pytest.approx(1.875)
    assert (stats.audio_duration_s.min, stats.audio_duration_s.median, stats.audio_duration_s.max) == (0.125, 0.5, 1.25)
    assert statistics.median([40, 64, 100, 40]) == 52  # the hand computation the assertion above uses


# --- bad input: one line naming file, line and field; nothing written --------------------------------


def _bad_cases(folder: Path) -> list[tuple[dict, str, str]]:
    (folder / "noise.png").write_bytes(bytes(range(256)))
    Image.new("RGB", (4, 4)).save(folder / "old.bmp", format="BMP")
    png(folder / "big.png", 300, 20)
    wav(folder / "long.wav", 1.0)
    return [
        (chat([{"type": "text", "text": "x"}, {"type": "image", "image": "img/missing.png"}]),
         "messages[0].content[1].image", f"file not found: {folder / 'img' / 'missing.png'}"),
        (chat([{"type": "image", "image": "noise.png"}]), "messages[0].content[0].image", "is not an image"),
        (chat([{"type": "image", "path": "old.bmp"}]), "messages[0].content[0].path",
         "is a BMP image; accepted image formats: PNG, JPEG, WebP, GIF"),
        (chat([{"type": "audio", "audio": "img/red.png"}]), "messages[0].content[0].audio",
         "accepted audio formats: WAV, FLAC, MP3, OGG"),
        (chat([{"type": "image", "image": "big.png"}]), "messages[0].content[0].image",
         "image is 300x20 px; the longest side may be 256 px (data.media.image_max_side)"),
        (chat([{"type": "image", "image": "img/blue.jpg"}]), "messages[0].content[0].image",
         f"image file is {len(jpeg(folder / 'img' / 'blue.jpg', 64, 48))} bytes; the limit is 0.0005 MiB "
         "(data.media.image_max_mb)"),
        (chat([{"type": "audio", "audio": "long.wav"}]), "messages[0].content[0].audio",
         "audio is longer than 0.75 s (data.media.audio_max_seconds)"),
        ({"messages": [{"role": "user", "content": "Describe your picture"},
                       {"role": "assistant", "content": [{"type": "image", "image": "img/red.png"}]}]},
         "messages[1].content[0]", "image part in an assistant message; what the assistant says is text only"),
        (chat([]), "messages[0].content", "must hold at least one part"),
        (chat([{"type": "image", "image": "img/red.png"}, {"type": "text", "text": "  "}]),
         "messages[0].content[1].text", "must not be empty"),
        (chat([{"type": "video", "video": "a.mp4"}]), "messages[0].content[0].type",
         "unknown part type 'video'; accepted: audio, image, image_url, input_audio, text"),
        (chat([{"type": "image", "image": "https://example.com/a.png"}]), "messages[0].content[0].image",
         "is a web address; download the file"),
        (chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]),
         "messages[0].content[0].image_url.url", "is not valid base64"),
        (chat([{"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(folder / "t.wav", 0.1)).decode(),
                                                      "format": "mp3"}}]),
         "messages[0].content[0].input_audio.format", "says mp3 but the data is wav"),
        (chat([{"type": "image", "image": "img/red.png", "caption": "red"}]), "messages[0].content[0].caption",
         "unexpected field in a image part"),
    ]


# Every image but the 64x48 JPEG (679 bytes) is under 0.0005 MiB (524 bytes): solid colours compress.
LIMITS = MediaLimits(image_max_side=256, image_max_mb=0.0005, audio_max_seconds=0.75)


@pytest.mark.parametrize("case", range(15))
def test_bad_part_names_file_line_and_field(media, tmp_path, case):
    folder = media["folder"]
    record, field, message = _bad_cases(folder)[case]
    path = write_jsonl(folder / "rows.jsonl", [chat("a fine first row"), record])
    with pytest.raises(TunewrightError) as info:
        prepare_dataset([path], eval_fraction=0.0, media_limits=LIMITS)
    text = str(info.value)
    assert text.startswith(f"{path}:2: field '{field}': "), text
    assert message in text and "\n" not in text


def test_bad_import_through_the_cli_leaves_no_version(media, tmp_path, tiny_model_dir, capsys):
    workspace = init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys)
    folder = media["folder"]
    good = write_jsonl(folder / "good.jsonl", [chat([{"type": "image", "image": "img/red.png"}])])
    bad = write_jsonl(folder / "bad.jsonl", [chat("fine"), chat([{"type": "image", "image": "img/gone.png"}])])
    code, out, err = run(["-w", workspace, "data", "import", good, bad], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{bad}:2: field 'messages[0].content[0].image': file not found" in err
    datasets = workspace / "datasets"
    assert not datasets.exists() or list(datasets.rglob("*")) == []  # no version folder, no temporary one

    code, out, err = run(["-w", workspace, "data", "import", good, "--name", "pics", "--eval-fraction", "0"], capsys)
    assert code == 0, err
    assert "media stored: 1 image, 0 audio files" in out
    code, out, err = run(["-w", workspace, "data", "stats", "--dataset", "pics"], capsys)
    assert code == 0, err
    assert "image parts" in out and "40 / 40 / 40 px" in out and "30 / 30 / 30 px" in out


def test_limits_are_settings_of_the_recipe(tmp_path):
    from tunewright.config import DataSpec

    assert DataSpec().media == MediaLimits(image_max_mb=20, image_max_side=8192, audio_max_mb=30, audio_max_seconds=300)
    assert DataSpec.model_validate({"media": {"image_max_side": 512}}).media.image_max_side == 512
    with pytest.raises(Exception, match="greater than 0"):
        DataSpec.model_validate({"media": {"audio_max_seconds": 0}})


def test_stored_rows_must_hold_canonical_refs(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    row = chat([{"type": "image", "image": "photo.png"}])
    (folder / "train.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(TunewrightError) as info:
        read_split(folder, "train")
    assert str(info.value).startswith(f"{folder / 'train.jsonl'}:1: field 'messages[0].content[0].image': "
                                      "must be a stored media reference media/<sha256>.<gif|jpg|png|webp>, "
                                      "got 'photo.png'; import the data file to store the media")


# --- text-only stages -----------------------------------------------------------------------------


@pytest.fixture
def part_row(media) -> ChatRow:
    folder = media["folder"]
    (row,), _ = load_rows([write_jsonl(folder / "rows.jsonl", [
        chat([{"type": "text", "text": "Mail me at jane.doe@example.com"}, {"type": "image", "image": "img/red.png"}])])])
    return row


def test_tokenisation_refuses_a_part_row(part_row, tiny_tokenizer):
    with pytest.raises(TunewrightError) as info:
        encode_chat(tiny_tokenizer, [m.model_dump() for m in part_row.messages], 64)
    assert str(info.value) == ("field 'messages[0].content[1]': row has image parts: align it first (turn its "
                               "images and audio into text) so this text-only stage can read it")


def test_loading_a_split_for_a_text_stage_refuses_part_rows(media, tmp_path, tiny_model_dir, capsys):
    from tunewright.data.api import import_files, load_split
    from tunewright.workspace import Workspace

    workspace = Workspace.open(init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys))
    folder = media["folder"]
    path = write_jsonl(folder / "rows.jsonl", [chat("just text"), chat([{"type": "audio", "audio": "tone.wav"}])])
    record = import_files(workspace, [path], name="voice", eval_fraction=0.0)
    with pytest.raises(TunewrightError) as info:
        load_split(workspace, "voice", "train")
    assert str(info.value) == (f"{Path(record.path) / 'train.jsonl'}:2: field 'messages[0].content[0]': row has audio "
                               "parts (imported from rows.jsonl:2): align it first (turn its images and audio into "
                               "text) so this text-only stage can read it")
    _, rows = load_split(workspace, "voice", "train", text_only=False)
    assert [row.has_media for row in rows] == [False, True]


def test_pii_scan_reads_the_text_parts_of_a_part_row(part_row):
    from tunewright.config.govern import PiiSpec

    scan = scan_rows({"train": [part_row]}, PiiSpec())
    assert scan["summary"]["n_findings"] == 1
    (finding,) = scan["findings"]
    assert (finding["turn"], finding["part"], finding["kind"]) == (0, 0, "email")


def test_an_image_in_memory_decodes_like_one_on_disk():
    # The probe reads bytes, so a data URL and a file give the same facts.
    from tunewright.data.media import probe_image

    buffer = io.BytesIO()
    Image.new("RGB", (12, 7)).save(buffer, format="WEBP")
    assert probe_image(buffer.getvalue(), MediaLimits()) == {"format": "webp", "width": 12, "height": 7}


def _encode(container: str, codec: str, rate: int, seconds: float) -> bytes:
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        t = np.arange(int(rate * seconds)) / rate
        frame = av.AudioFrame.from_ndarray((np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("container, codec, rate", [("flac", "flac", 16000), ("mp3", "libmp3lame", 16000),
                                                    ("ogg", "libopus", 48000)])
def test_audio_containers_are_measured(container, codec, rate, tmp_path):
    data = _encode(container, codec, rate, 0.5)
    (tmp_path / f"clip.{container}").write_bytes(data)
    prepared = prepare_dataset([write_jsonl(tmp_path / "rows.jsonl", [chat([{"type": "audio", "audio": f"clip.{container}"}])])],
                               eval_fraction=0.0)
    (entry,) = [m.manifest_entry() for m in prepared.media.values()]
    assert (entry["format"], entry["sample_rate"], entry["sha256"]) == (container, rate, sha(data))
    assert entry["duration_s"] == pytest.approx(0.5, abs=0.02)  # lossy codecs may pad a few milliseconds


def test_the_bias_data_scan_reads_the_text_parts_of_a_part_row(part_row):
    # govern's term scan counts words; an image has none until aligned, so only the text parts count.
    from tunewright.govern.datascan import _row_text

    texts = [t for m in part_row.messages for t in m.text_parts()]
    assert texts and _row_text(part_row.messages) == "\n".join(texts)
    assert "media/" not in _row_text(part_row.messages)


@pytest.mark.parametrize("source", ["/etc/hostname", "file:///etc/hostname", "https://example.com/a.png",
                                    {"path": "/etc/hostname"}])
def test_inline_only_parts_never_read_a_file_or_the_network(tmp_path, source):
    from tunewright.data.media import MediaCollector
    from tunewright.data.normalize import Where
    from tunewright.data.part_shapes import PartContext, resolve_source
    from tunewright.errors import TunewrightError

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    ctx = PartContext(Where(None, None), base=tmp_path, media=MediaCollector(), inline_only=True)
    assert resolve_source(data_url, ctx, "f") == buffer.getvalue()  # inline data is read as before
    with pytest.raises(TunewrightError, match="must be a data URL") as info:
        resolve_source(source, ctx, "messages[0].content[0].image_url.url")
    assert info.value.field.startswith("messages[0].content[0].image_url.url")
    # An import (not inline-only) still reads a file path.
    assert resolve_source("x.png", PartContext(Where(None, None), tmp_path, MediaCollector()), "f") == tmp_path / "x.png"
