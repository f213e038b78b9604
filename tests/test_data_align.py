"""`tunewright data align`: part rows become text rows in the aligned-v1 layout, registered as a new
dataset version whose parent is the media version, with the engines' provenance, the cache and
reviewers' corrections; the text path trains and evaluates on the result. Fake engines (the text
each file "shows" is set here) keep most tests free of real models; one test runs the real OCR on two
Peachtree images and checks it against what the generator printed on them (its manifest)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
import wave
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict

from helpers import chat_records, init_cli_workspace, run_cli as run, write_jsonl
from tunewright.align import AlignEngine, CorrectionStore, EngineResult, register_aligner
from tunewright.data.prepare import read_split

PEACHTREE = Path(__file__).resolve().parents[1] / "examples" / "peachtree" / "media"


# --- fake engines: the text of each file is whatever the test says it shows -----------------------

SHOWS: dict[str, str] = {}  # media sha256 -> text


class _FakeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shout: bool = False


class _Fake(AlignEngine):
    package = "pydantic"  # any installed distribution: its version is what provenance records
    Settings = _FakeSettings
    Result = EngineResult
    calls: ClassVar[int] = 0

    def model_identity(self, settings: BaseModel) -> str:
        return f"{self.name}-weights-v1"

    def run(self, path: Path, settings: BaseModel) -> EngineResult:
        assert isinstance(settings, _FakeSettings)
        _Fake.calls += 1
        text = SHOWS[hashlib.sha256(path.read_bytes()).hexdigest()]
        return EngineResult(text=text.upper() if settings.shout else text)


@register_aligner
class FakeOcr(_Fake):
    name = "fake-ocr-da"
    modality = "image"


@register_aligner
class FakeAsr(_Fake):
    name = "fake-asr-da"
    modality = "audio"


FAKE_ENGINES = "align:\n  engines:\n    image: fake-ocr-da\n    audio: fake-asr-da\n"
TRAIN = ("train:\n  r: 4\n  alpha: 8\n  learning_rate: 0.01\n  batch_size: 2\n  max_length: 128\n"
         "eval:\n  max_new_tokens: 8\n  batch_size: 2\n"
         # The forgetting check asks the shipped general prompts of both models: minutes on a CPU,
         # and nothing this test looks at.
         "govern:\n  forgetting:\n    enabled: false\n")


def png(path: Path, colour) -> str:
    Image.new("RGB", (40, 30), colour).save(path, format="PNG")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wav(path: Path, freq: float) -> str:
    rate = 16_000
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * freq * i / rate)))
                                 for i in range(rate // 2)))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def user(parts, answer, reference, split) -> dict:
    return {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": answer}],
            "reference": reference, "meta": {"split": split}}


@pytest.fixture
def shop(tmp_path, tiny_model_dir, capsys):
    """A workspace with the fake engines and dataset 'shop': 2 images, 1 clip and a text row (3 train, 1 eval)."""
    _Fake.calls = 0
    SHOWS.clear()
    data = tmp_path / "data"
    data.mkdir()
    tent, error, clip = png(data / "tent.png", (200, 30, 30)), png(data / "error.png", (20, 90, 200)), wav(data / "q.wav", 440)
    SHOWS.update({tent: "Ridgeback 2 Tent\n$189", error: "Payment declined (E-402)", clip: "how long is the warranty"})
    rows = [
        user([{"type": "image", "image": "tent.png"}, {"type": "text", "text": "how much is this?"}],
             "The Ridgeback 2 Tent costs $189.", "$189", "train"),
        user([{"type": "text", "text": "why can't I check out?"}, {"type": "image", "image": "error.png"}],
             "Error E-402: your card was declined.", "E-402", "train"),
        {**user([{"type": "audio", "audio": "q.wav"}], "Two years.", "2 years", "eval"),
         "messages": [{"role": "system", "content": "You help Peachtree shoppers."},
                      {"role": "user", "content": [{"type": "audio", "audio": "q.wav"}]},
                      {"role": "assistant", "content": "Two years."}]},
        user("Do you ship abroad?", "Only within the United States.", None, "train"),
    ]
    ws = init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys, TRAIN + FAKE_ENGINES)
    code, _, err = run(["-w", ws, "data", "import", write_jsonl(data / "rows.jsonl", rows), "--eval-fraction", "0"], capsys)
    assert code == 0, err
    return {"ws": ws, "tent": tent, "error": error, "clip": clip}


def said(args, capsys) -> tuple[int, str, str]:
    """run_cli with the output's line wrapping undone (rich wraps at the terminal width)."""
    code, out, err = run(args, capsys)
    return code, " ".join(out.split()), " ".join(err.split())


def registry(ws):
    from tunewright.workspace import Workspace

    return Workspace.open(ws).registry


def user_contents(folder, split) -> list[str]:
    return [next(m.content for m in row.messages if m.role == "user") for row in read_split(folder, split)]


def test_align_writes_the_layout_as_text_rows_with_lineage_provenance_and_traceable_meta(shop, capsys):
    ws = shop["ws"]
    code, out, err = said(["-w", ws, "data", "align", "shop"], capsys)
    assert code == 0, err
    assert "2 image files, 1 audio file (0 corrected by reviewers)" in out and "3 train, 1 eval" in out
    assert _Fake.calls == 3  # each media file read once

    reg = registry(ws)
    media, aligned = reg.get_dataset("shop"), reg.get_dataset("shop-aligned")
    assert user_contents(aligned.path, "train") == [
        "[image text]\nRidgeback 2 Tent\n$189\n[/image text]\n\nhow much is this?",
        "why can't I check out?\n\n[image text]\nPayment declined (E-402)\n[/image text]",
        "Do you ship abroad?",
    ]
    [eval_row] = read_split(aligned.path, "eval")  # rows stay on their side of the held-out line
    assert [m.content for m in eval_row.messages] == [
        "You help Peachtree shoppers.", "[audio transcript]\nhow long is the warranty\n[/audio transcript]",
        "Two years."]
    assert eval_row.reference == "2 years"

    # Each aligned row names the media it was read from, as stored in the media version.
    train_refs = [row.media() for row in read_split(media.path, "train")]
    assert [row.meta.get("aligned", {}).get("media") for row in read_split(aligned.path, "train")] == \
        [train_refs[0], train_refs[1], None]
    assert eval_row.meta["aligned"] == {"from": f"shop@{media.version}", "split": "eval", "line": 1,
                                        "media": [f"media/{shop['clip']}.wav"]}
    assert not (Path(aligned.path) / "media").exists()

    assert [(e["parent_kind"], e["parent_id"], e["relation"]) for e in reg.lineage("dataset", aligned.id)
            if (e["child_kind"], e["child_id"]) == ("dataset", str(aligned.id))] == \
        [("dataset", str(media.id), "aligned_into")]
    spec = aligned.spec
    assert spec["kind"] == "align" and spec["layout"] == "aligned-v1"
    assert spec["source"] == {"dataset": "shop", "version": media.version, "id": media.id,
                              "content_sha256": media.content_sha256}
    assert spec["engines"]["image"] == {"engine": "fake-ocr-da", "package": "pydantic",
                                        "version": metadata.version("pydantic"),
                                        "model": "fake-ocr-da-weights-v1", "settings": {"shout": False}}
    assert spec["engines"]["audio"]["engine"] == "fake-asr-da"
    assert spec["media"] == {"audio": 1, "image": 2}
    assert spec["corrections"] == {"applied": 0, "media_sha256": []}
    assert sorted(p.name.split(".")[0] for p in (ws / "cache" / "align" / "fake-ocr-da").iterdir()) == \
        sorted([shop["tent"], shop["error"]])


def test_a_second_run_reads_the_cache_and_a_correction_makes_a_new_version(shop, capsys):
    ws = shop["ws"]
    assert run(["-w", ws, "data", "align", "shop"], capsys)[0] == 0
    first = registry(ws).get_dataset("shop-aligned")
    _Fake.calls = 0

    code, out, err = said(["-w", ws, "data", "align", "shop"], capsys)
    assert code == 0, err
    assert "already registered" in out and _Fake.calls == 0
    assert [d.version for d in registry(ws).list_datasets() if d.name == "shop-aligned"] == [first.version]

    CorrectionStore(ws / "cache" / "align").set(shop["tent"], "fake-ocr-da", "Ridgeback 2 Tent\n$179", by="ana")
    code, out, err = said(["-w", ws, "data", "align", "shop"], capsys)
    assert code == 0, err
    assert "1 corrected by reviewers" in out and _Fake.calls == 0
    second = registry(ws).get_dataset("shop-aligned")
    assert second.version != first.version
    assert user_contents(second.path, "train")[0] == "[image text]\nRidgeback 2 Tent\n$179\n[/image text]\n\nhow much is this?"
    assert second.spec["corrections"] == {"applied": 1, "media_sha256": [shop["tent"]]}

    # Settings are the recipe's: a changed one runs the engine again for the files it reads.
    recipe = ws / "tunewright.yaml"
    recipe.write_text(recipe.read_text() + "  fake-ocr-da:\n    shout: true\n")
    code, out, err = run(["-w", ws, "data", "align", "shop", "--name", "loud"], capsys)
    assert code == 0, err
    assert _Fake.calls == 1  # the tent is corrected; only the error screenshot is read again
    loud = registry(ws).get_dataset("loud")
    assert "PAYMENT DECLINED (E-402)" in user_contents(loud.path, "train")[1]
    assert loud.spec["engines"]["image"]["settings"] == {"shout": True}


def test_the_text_path_trains_and_evaluates_on_the_aligned_version(shop, capsys):
    ws = shop["ws"]
    code, out, err = run(["-w", ws, "train", "--dataset", "shop", "--max-steps", "2"], capsys)
    assert code != 0 and "align it first" in out + err  # the media version itself is refused
    assert run(["-w", ws, "data", "align", "shop"], capsys)[0] == 0

    code, out, err = run(["-w", ws, "train", "--dataset", "shop-aligned", "--max-steps", "2"], capsys)
    assert code == 0, err
    reg = registry(ws)
    adapter = reg.get_adapter("shop")
    run_record = reg.get_run(adapter.run_id)
    assert run_record.status == "completed" and len(run_record.metrics["losses"]) == 2
    assert run_record.dataset_id == reg.get_dataset("shop-aligned").id
    # The adapter says how its parts were read, so the server reads a customer's file the same way.
    aligned = reg.get_dataset("shop-aligned")
    assert json.loads((Path(adapter.path) / "alignment.json").read_text()) == {
        "layout": "aligned-v1", "engines": {"image": "fake-ocr-da", "audio": "fake-asr-da"},
        "settings": {"fake-ocr-da": {"shout": False}, "fake-asr-da": {"shout": False}},
        "dataset": f"shop-aligned@{aligned.version}"}

    code, out, err = run(["-w", ws, "eval", "--dataset", "shop-aligned", "--split", "train", "--limit", "2"], capsys)
    assert code == 0, err
    report = json.loads((ws / "reports" / "shop" / "report.json").read_text())
    assert report["n_examples"] == 2


def test_a_damaged_alignment_file_is_refused_naming_it(tmp_path):
    """The server and generate read parts through alignment.json: a damaged one, or a layout this
    version does not render, is refused naming the file (and the field), never half-read."""
    from tunewright.align.adapter import AlignmentConfig
    from tunewright.errors import TunewrightError

    assert AlignmentConfig.read(tmp_path) is None and AlignmentConfig.read(None) is None
    config = AlignmentConfig(layout="aligned-v1", engines={"image": "ocr"}, settings={"ocr": {}}, dataset="d@1")
    config.save(tmp_path)
    assert AlignmentConfig.read(tmp_path) == config
    (tmp_path / "alignment.json").write_text('{"layout": "aligned-v1"')
    with pytest.raises(TunewrightError, match=r"alignment.json: cannot read the adapter's alignment"):
        AlignmentConfig.read(tmp_path)
    (tmp_path / "alignment.json").write_text('{"layout": "aligned-v1", "engines": {}}')
    with pytest.raises(TunewrightError, match=r"alignment.json: cannot read the adapter's alignment: .*settings"):
        AlignmentConfig.read(tmp_path)
    (tmp_path / "alignment.json").write_text(
        '{"layout": "aligned-v0", "engines": {}, "settings": {}, "dataset": "d@1"}')
    with pytest.raises(TunewrightError, match=r"field 'layout'.*layout 'aligned-v0' is not one this version renders"):
        AlignmentConfig.read(tmp_path)


def _peachtree_row(row_id: str) -> dict:
    for line in (PEACHTREE / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["meta"]["id"] == row_id:
            return row
    raise AssertionError(row_id)


def test_real_ocr_reads_the_error_code_and_the_price_printed_on_peachtree_images(tmp_path, tiny_model_dir, capsys):
    files = {f["row"]: f for f in json.loads((PEACHTREE / "manifest.json").read_text())["files"]}
    screenshot, label = files["screenshot-train-000"], files["label-train-000"]
    rows = [_peachtree_row("screenshot-train-000"), _peachtree_row("label-train-000")]
    folder = tmp_path / "peach"
    (folder / "images").mkdir(parents=True)
    for entry in (screenshot, label):  # the rows name their images relative to the data file
        shutil.copy(PEACHTREE / entry["path"], folder / entry["path"])
    ws = init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys)
    data = write_jsonl(folder / "rows.jsonl", rows)
    code, _, err = run(["-w", ws, "data", "import", data, "--name", "peach", "--eval-fraction", "0"], capsys)
    assert code == 0, err
    code, out, err = run(["-w", ws, "data", "align", "peach"], capsys)
    assert code == 0, err
    texts = user_contents(registry(ws).get_dataset("peach-aligned").path, "train")
    assert screenshot["code"] in texts[0] and texts[0].endswith("[/image text]\n\nwhy can't I check out?")
    assert label["price"] in texts[1] and texts[1].startswith("[image text]\n")
    engine = registry(ws).get_dataset("peach-aligned").spec["engines"]["image"]
    assert engine["engine"] == "ocr" and engine["package"] == "rapidocr-onnxruntime" and ".onnx@" in engine["model"]


# --- bad input: one line, nothing registered -------------------------------------------------------

def _count(ws) -> int:
    return len(registry(ws).list_datasets())


def test_a_dataset_without_media_parts_is_refused(tmp_path, tiny_model_dir, capsys):
    ws = init_cli_workspace(tmp_path / "ws", tiny_model_dir, capsys)
    assert run(["-w", ws, "data", "import", write_jsonl(tmp_path / "t.jsonl", chat_records(4))], capsys)[0] == 0
    code, out, err = said(["-w", ws, "data", "align", "shop"], capsys)
    assert code == 2
    assert "dataset 'shop@" in out + err and "has no image or audio parts: nothing to align" in out + err
    assert _count(ws) == 1


def test_an_unknown_dataset_is_named(shop, capsys):
    code, out, err = said(["-w", shop["ws"], "data", "align", "nope"], capsys)
    assert code != 0 and "dataset 'nope' not found; known: shop" in out + err
    code, out, err = said(["-w", shop["ws"], "data", "align", "shop@000000000000"], capsys)
    assert code != 0 and "version '000000000000' not found" in out + err


def test_a_media_file_missing_from_the_version_is_named_before_any_engine_runs(shop, capsys):
    ws = shop["ws"]
    missing = Path(registry(ws).get_dataset("shop").path) / "media" / f"{shop['error']}.png"
    missing.unlink()
    code, out, err = said(["-w", ws, "data", "align", "shop"], capsys)
    assert code != 0 and str(missing) in out + err and "missing" in out + err
    assert _Fake.calls == 0 and _count(ws) == 1


@pytest.mark.parametrize("section, field, message", [
    ("  fake-ocr-da:\n    shout: loud\n", "align.fake-ocr-da.shout", "valid boolean"),
    ("  fake-ocr-da:\n    dpi: 300\n", "align.fake-ocr-da.dpi", "unknown setting for aligner 'fake-ocr-da'"),
    ("  tesseract:\n    psm: 6\n", "align", "unknown aligner 'tesseract'"),
    ("  fake-ocr-da: 3\n", "align.fake-ocr-da", "valid dictionary"),
])
def test_bad_align_settings_in_the_recipe_are_named(shop, capsys, section, field, message):
    ws = shop["ws"]
    recipe = ws / "tunewright.yaml"
    good = recipe.read_text()
    recipe.write_text(good + section)
    code, out, err = said(["-w", ws, "data", "align", "shop"], capsys)
    assert code == 2 and str(recipe) in out + err and f"field '{field}'" in out + err and message in out + err
    recipe.write_text(good)
    assert _Fake.calls == 0 and _count(ws) == 1


def test_an_engine_for_the_wrong_part_type_is_named(shop, capsys):
    ws = shop["ws"]
    recipe = ws / "tunewright.yaml"
    recipe.write_text(recipe.read_text().replace("audio: fake-asr-da", "audio: fake-ocr-da"))
    code, out, err = said(["-w", ws, "data", "align", "shop"], capsys)
    assert code == 2 and "field 'align.engines.audio'" in out + err and "reads image parts, not audio" in out + err


def test_the_eval_table_prints_aligned_rows_as_they_are():
    # The aligned layout's "[/audio transcript]" is text to show, not a Rich closing tag to parse.
    from rich.console import Console

    from tunewright.cli.stages import example_table

    question = "[audio transcript]\nhow much is the tent\n[/audio transcript]"
    console = Console(record=True, width=200)
    console.print(example_table([{"question": question, "expected": "$189", "base_response": "[b]x[/b]",
                                  "tuned_response": "It costs $189."}]))
    shown = console.export_text()
    assert "[/audio transcript]" in shown and "[b]x[/b]" in shown and "It costs $189." in shown


# --- the review UI's media page: each file beside what was read, and a reviewer's correction ------

def test_a_reviewer_sees_each_file_beside_its_text_and_the_correction_trains(shop, capsys):
    import re

    from fastapi.testclient import TestClient

    from tunewright.config.synth import ReviewSpec
    from tunewright.review import add_reviewer
    from tunewright.review.web import create_app

    ws = shop["ws"]
    assert run(["-w", ws, "data", "align", "shop"], capsys)[0] == 0
    reg = registry(ws)
    first = reg.get_dataset("shop-aligned")
    add_reviewer(reg, "ana", "correct horse")
    client = TestClient(create_app(reg, ReviewSpec(), secret_key="s" * 40, align_cache=ws / "cache" / "align"))
    page_url = f"/media/shop-aligned/{first.version}"
    assert client.get(page_url, follow_redirects=False).status_code in (303, 401)  # logged-in reviewers only

    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"name": "ana", "password": "correct horse", "csrf": token},
                       follow_redirects=False).status_code == 303
    index = client.get("/media")
    assert f'href="{page_url}">shop-aligned@{first.version}</a>' in index.text and "2 image, 1 audio" in index.text
    page = client.get(page_url)
    assert page.status_code == 200
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    # Every media file of the source version, with the engine's text and a player that serves its bytes.
    for sha, shown in ((shop["tent"], "Ridgeback 2 Tent\n$189"), (shop["error"], "Payment declined (E-402)"),
                       (shop["clip"], "how long is the warranty")):
        section = re.search(rf'<section class="media-file" id="m-{sha[:12]}".*?</section>', page.text, re.S).group(0)
        assert f"<strong>engine:</strong> {shown}" in section
        src = re.search(r'(?:img|audio) class="media"[^>]*src="([^"]+)"', section).group(1)
        served = client.get(src)
        stored = next((Path(reg.get_dataset("shop").path) / "media").glob(f"{sha}.*"))
        assert served.status_code == 200 and served.content == stored.read_bytes()
    assert client.get(f"/media/shop-aligned/{first.version}/files/..%2Fmanifest.json").status_code == 404
    assert client.get(f"/media/shop-aligned/{first.version}/files/{'0' * 64}.png").status_code == 404

    # Without the page's token nothing is saved; with it the correction is stored under the reviewer.
    assert client.post(page_url, data={"sha256": shop["tent"], "text": "x"}).status_code == 403
    saved = client.post(page_url, data={"csrf": token, "sha256": shop["tent"], "text": "Ridgeback 2 Tent\n$179"},
                        follow_redirects=False)
    assert saved.status_code == 303
    correction = CorrectionStore(ws / "cache" / "align").get(shop["tent"], "fake-ocr-da")
    assert correction.text == "Ridgeback 2 Tent\n$179" and correction.by == "ana"
    assert "corrected by ana" in client.get(page_url).text
    bad = client.post(page_url, data={"csrf": token, "sha256": "f" * 64, "text": "x"})
    assert bad.status_code == 400 and "sha256 names no media file" in bad.text

    # The next alignment trains on the reviewer's text.
    assert run(["-w", ws, "data", "align", "shop"], capsys)[0] == 0
    second = registry(ws).get_dataset("shop-aligned")
    assert user_contents(second.path, "train")[0] == "[image text]\nRidgeback 2 Tent\n$179\n[/image text]\n\nhow much is this?"
    # Saving the engine's own text back removes the correction.
    client.post(page_url, data={"csrf": token, "sha256": shop["tent"], "text": "Ridgeback 2 Tent\n$189"})
    assert CorrectionStore(ws / "cache" / "align").get(shop["tent"], "fake-ocr-da") is None
    # A dataset that alignment did not make has no media page.
    refused = client.get(f"/media/shop/{reg.get_dataset('shop').version}")
    assert refused.status_code == 400 and "was not made by `tunewright data align`" in refused.text
