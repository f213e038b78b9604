"""The shipped Peachtree media set (examples/peachtree/media/) and its generator.

Facts are checked against catalog.csv and policies.md parsed here, independently of the generator;
the error codes and policy phrases a correct answer must carry are written out by hand below.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import PIL
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "examples" / "peachtree"
MEDIA = SHOP / "media"
SCRIPT = MEDIA / "make_media.py"

# The checkout error table as the design asks for it: kind of error -> code.
ERROR_CODES = {"card-declined": "E-402", "cvv-mismatch": "E-405", "address-not-deliverable": "E-311",
               "promo-expired": "E-219", "out-of-stock": "E-507", "session-expired": "E-118"}
# Spoken policy questions -> what a correct answer must say.
POLICY_ANSWERS = {
    "How long do I have to return something?": "45 days",
    "Can I return hiking boots I wore outside once?": "60 days",
    "I opened my camp stove. Can I still return it?": "restocking fee of 10 percent",
    "How long does a refund take?": "within 5 business days",
    "Can I return something that was marked final sale?": "cannot be returned",
    "Is shipping free?": "free on orders over $75",
    "How long does standard shipping take?": "3 to 5 business days",
    "How much is expedited shipping?": "$14.95",
    "Do you ship to Canada?": "only within the United States",
    "If I order this morning, will it ship today?": "before 2 pm Eastern",
}


def catalog() -> dict[str, dict]:
    with open(SHOP / "catalog.csv", newline="") as fh:
        return {row["code"]: row for row in csv.DictReader(fh)}


def policy_lines() -> list[str]:
    return [line[2:].strip() for line in (SHOP / "policies.md").read_text().splitlines() if line.startswith("- ")]


def dollars(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"\$(\d[\d,]*(?:\.\d\d)?)", text)]


def shipped_rows() -> list[tuple[str, dict]]:
    return [(split, json.loads(line)) for split in ("train", "eval")
            for line in (MEDIA / f"{split}.jsonl").read_text().splitlines()]


def manifest(folder: Path = MEDIA) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def entries_by_path(folder: Path = MEDIA) -> dict[str, dict]:
    return {e["path"]: e for e in manifest(folder)["files"]}


def media_path(row: dict) -> str:
    part = row["messages"][0]["content"][0]
    return part[part["type"]]


def answer(row: dict) -> str:
    assert row["messages"][-1]["role"] == "assistant"
    return row["messages"][-1]["content"]


def generate(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- The shipped set ---------------------------------------------------------------------------------

def test_rows_reference_files_that_exist_and_match_the_manifest():
    entries = entries_by_path()
    seen = set()
    for split, row in shipped_rows():
        user = row["messages"][0]
        assert user["role"] == "user" and isinstance(user["content"], list)
        part = user["content"][0]
        path = media_path(row)
        assert part["type"] in ("image", "audio") and not Path(path).is_absolute()
        assert path.startswith({"image": "images/", "audio": "audio/"}[part["type"]])
        data = (MEDIA / path).read_bytes()
        entry = entries[path]
        assert entry["split"] == split == row["meta"]["split"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
        assert isinstance(answer(row), str) and answer(row)
        seen.add(path)
    on_disk = {str(p.relative_to(MEDIA)) for d in ("images", "audio") for p in (MEDIA / d).iterdir()}
    assert on_disk == seen == set(entries)  # no stray file, none unused


def test_counts_formats_and_size():
    entries = manifest()["files"]
    count = {(e["kind"], e["split"]): 0 for e in entries}
    for e in entries:
        count[e["kind"], e["split"]] += 1
    assert count == {("screenshot", "train"): 24, ("screenshot", "eval"): 8, ("label", "train"): 24,
                     ("label", "eval"): 8, ("audio", "train"): 24, ("audio", "eval"): 24}
    for e in entries:
        path = MEDIA / e["path"]
        if e["kind"] == "audio":
            with av.open(str(path)) as container:
                stream = container.streams.audio[0]
                assert stream.codec_context.name == "flac"
                frames = list(container.decode(stream))
            assert {f.sample_rate for f in frames} == {16000} and {len(f.layout.channels) for f in frames} == {1}
            assert sum(f.samples for f in frames) / 16000 == pytest.approx(e["duration_s"], abs=0.002)
        else:
            with Image.open(path) as image:
                assert image.format == "JPEG" and image.size == (e["width"], e["height"])
                assert image.width <= 900
            assert 60 <= e["jpeg_quality"] <= 85
    total = sum(p.stat().st_size for p in MEDIA.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 6_000_000


def test_label_answers_agree_with_the_catalog():
    products, entries = catalog(), entries_by_path()
    names = {row["name"] for row in products.values()}
    labels = [(row, entries[media_path(row)]) for _, row in shipped_rows() if row["meta"]["kind"] == "label"]
    assert len(labels) == 32
    for row, entry in labels:
        product = products[entry["text"]["code"]]
        assert entry["text"] == {"name": product["name"], "code": product["code"], "price": f"${product['price_usd']}"}
        text = answer(row)
        assert product["name"] in text and product["code"] in text
        assert [n for n in names if n in text] == [product["name"]]
        assert all(amount == float(product["price_usd"]) for amount in dollars(text))
        if entry["question"] == "price":
            assert dollars(text) == [float(product["price_usd"])]
        if entry["question"] == "warranty":
            assert product["warranty"] in text and not dollars(text)


def test_screenshot_answers_agree_with_the_error_table_and_policies():
    products, entries, policies = catalog(), entries_by_path(), policy_lines()
    free_over, fee = map(float, re.search(r"free on orders over \$(\d+); below that it costs \$(\d+\.\d\d)",
                                          " ".join(policies)).groups())
    phone = re.search(r"phone line is (\d{3}-\d{3}-\d{4})", " ".join(policies)).group(1)
    shots = [(row, entries[media_path(row)]) for _, row in shipped_rows() if row["meta"]["kind"] == "screenshot"]
    assert {e["error"] for _, e in shots} == set(ERROR_CODES)
    for row, entry in shots:
        code, text = ERROR_CODES[entry["error"]], answer(row)
        assert entry["code"] == code and row["reference"] == code and code in text
        assert entry["banner"][0].endswith(f"({code})")
        assert phone in text
        subtotal = 0.0
        for item_code, name, price in entry["cart"]:
            assert products[item_code]["name"] == name and float(price.strip("$")) == float(products[item_code]["price_usd"])
            subtotal += float(products[item_code]["price_usd"])
        shipping = 0.0 if subtotal > free_over else fee
        assert entry["shipping"] == ("Free" if shipping == 0 else f"${fee:.2f}")
        assert dollars(entry["total"]) == [subtotal + shipping]
        if entry["error"] == "address-not-deliverable":
            assert "Peachtree Outfitters ships only within the United States." in policies
            assert "Peachtree Outfitters ships only within the United States." in text
            assert "We ship only within the United States." in entry["message"]
            assert dict(entry["values"])["country"] != "United States"
        if entry["error"] == "out-of-stock":
            missing = products[entry["out_of_stock"]]
            assert f"{missing['name']} ({missing['code']})" in text and f"{missing['name']} ({missing['code']})" in entry["message"]
            assert missing["code"] in [c for c, _, _ in entry["cart"]]
        if entry["error"] == "promo-expired":
            promo = dict(entry["values"])["promo"]
            assert promo and promo in text and promo in entry["message"]


def test_spoken_answers_agree_with_the_catalog_and_policies():
    products, entries, policies = catalog(), entries_by_path(), policy_lines()
    clips = [(row, entries[media_path(row)]) for _, row in shipped_rows() if row["meta"]["kind"] == "audio"]
    assert {e["topic"] for _, e in clips} == {"price", "warranty", "returns", "shipping"}
    for row, entry in clips:
        text = answer(row)
        if entry["topic"] in ("price", "warranty"):
            named = [p for p in products.values() if p["name"] in entry["text"]]
            assert len(named) == 1
            product = named[0]
            assert product["name"] in text
            if entry["topic"] == "price":
                assert dollars(text) == [float(product["price_usd"])]
            else:
                assert product["warranty"] in text and not dollars(text)
        else:
            assert text in policies  # the policy line itself, word for word
            assert POLICY_ANSWERS[entry["text"]] in text
            assert row["reference"] in text


def test_eval_media_share_no_font_voice_or_noise_level_with_training():
    entries = manifest()["files"]

    def used(split: str, key: str) -> set:
        return {e[key] for e in entries if e["split"] == split and key in e}

    for key in ("font", "voice", "snr_db"):
        train, held_out = used("train", key), used("eval", key)
        assert train and held_out and not train & held_out, key
    assert min(used("eval", "snr_db")) < min(used("train", "snr_db"))  # the loudest noise is eval's
    assert "Liberation Serif" in used("eval", "font") and "en+f4" in used("eval", "voice")
    declared = manifest()["partition"]
    assert used("train", "font") <= set(declared["train"]["fonts"]) and used("eval", "font") <= set(declared["eval"]["fonts"])


# --- The generator -----------------------------------------------------------------------------------

def test_generator_is_deterministic_and_regenerates_the_shipped_labels(tmp_path):
    runs = []
    for name in ("a", "b"):
        done = generate(tmp_path / name, "--seed", "0", "--limit", "2", "--kinds", "screenshot,label")
        assert done.returncode == 0, done.stderr
        runs.append(tree_bytes(tmp_path / name))
    assert runs[0] == runs[1]
    assert sorted(p for p in runs[0] if p.startswith("images/")) == sorted(
        f"images/{kind}-{split}-{i:03d}.jpg" for kind in ("screenshot", "label") for split in ("train", "eval")
        for i in range(2))

    products, regenerated, shipped = catalog(), entries_by_path(tmp_path / "a"), entries_by_path()
    label = regenerated["images/label-train-000.jpg"]
    row = products[label["text"]["code"]]
    assert label["text"] == {"name": row["name"], "code": row["code"], "price": f"${row['price_usd']}"}
    assert label["lines"][0] == "PEACHTREE OUTFITTERS" and label["lines"][-2:] == [f"Item {row['code']}", f"${row['price_usd']}"]
    assert " ".join(label["lines"][1:-2]) == row["name"]
    assert label["text"] == shipped["images/label-train-000.jpg"]["text"]

    # Byte equality with the shipped files holds where the fonts and Pillow are the ones that made them.
    ours, theirs = manifest(tmp_path / "a"), manifest()
    if ours["fonts"] != {k: v for k, v in theirs["fonts"].items() if k in ours["fonts"]} or \
            ours["tools"]["pillow"] != theirs["tools"]["pillow"]:
        pytest.skip(f"fonts or Pillow {PIL.__version__} differ from the shipped set's; bytes are not comparable")
    for path in regenerated:
        assert regenerated[path]["sha256"] == shipped[path]["sha256"], path


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")
def test_generator_is_deterministic_for_audio(tmp_path):
    runs = []
    for name in ("a", "b"):
        done = generate(tmp_path / name, "--seed", "0", "--limit", "1", "--kinds", "audio")
        assert done.returncode == 0, done.stderr
        runs.append(tree_bytes(tmp_path / name))
    assert runs[0] == runs[1]
    assert sorted(p for p in runs[0] if p.startswith("audio/")) == ["audio/audio-eval-000.flac", "audio/audio-train-000.flac"]
    other_seed = generate(tmp_path / "c", "--seed", "1", "--limit", "1", "--kinds", "audio")
    assert other_seed.returncode == 0, other_seed.stderr
    assert (tmp_path / "c" / "audio" / "audio-train-000.flac").read_bytes() != runs[0]["audio/audio-train-000.flac"]


def _fails(tmp_path: Path, *args: str) -> str:
    out = tmp_path / "out"
    done = generate(out, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert not (out / "manifest.json").exists() and not (out / "train.jsonl").exists()  # nothing half-written
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_bad_arguments_are_refused(tmp_path):
    assert "field '--limit'" in _fails(tmp_path, "--limit", "0", "--kinds", "label")
    message = _fails(tmp_path, "--kinds", "screenshot,video")
    assert "field '--kinds'" in message and "'video'" in message


def test_a_catalog_without_a_column_or_with_a_bad_price_is_named(tmp_path):
    text = (SHOP / "catalog.csv").read_text()
    broken = tmp_path / "no-price.csv"
    broken.write_text(text.replace("price_usd", "cost", 1))
    assert f"{broken}:1: field 'price_usd'" in _fails(tmp_path, "--catalog", str(broken), "--kinds", "screenshot,label")
    bad_price = tmp_path / "bad-price.csv"
    bad_price.write_text(text.replace(",189,", ",one eighty-nine,", 1))
    message = _fails(tmp_path, "--catalog", str(bad_price), "--kinds", "screenshot,label")
    assert f"{bad_price}:2: field 'price_usd'" in message and "one eighty-nine" in message


def test_policies_missing_a_line_an_answer_needs_are_named(tmp_path):
    policies = tmp_path / "policies.md"
    policies.write_text((SHOP / "policies.md").read_text().replace("- Peachtree Outfitters ships only within the United States.\n", ""))
    message = _fails(tmp_path, "--policies", str(policies), "--kinds", "screenshot,label")
    assert str(policies) in message and "'ships only within'" in message and "Shipping" in message


def test_each_spoken_eval_question_is_also_shipped_typed():
    entries = entries_by_path()
    spoken = [row for split, row in shipped_rows() if split == "eval" and row["meta"]["kind"] == "audio"]
    typed = [json.loads(line) for line in (MEDIA / "eval-typed.jsonl").read_text().splitlines()]
    assert len(typed) == len(spoken) == 24
    for clip_row, typed_row in zip(spoken, typed):
        # What the clip says (the manifest's text, which espeak-ng spoke), as the user's whole turn.
        assert typed_row["messages"][0] == {"role": "user", "content": entries[media_path(clip_row)]["text"]}
        assert typed_row["messages"][1] == clip_row["messages"][1] and typed_row["reference"] == clip_row["reference"]
        assert typed_row["meta"] == {"id": clip_row["meta"]["id"] + "-typed", "kind": "audio, typed", "split": "eval"}


def test_the_media_recipe_retrieves_from_the_text_demo_files_themselves():
    """The open-book media adapter reads the same catalog and policies as the text demo: links, so an
    edited price reaches both (and the generator, which reads them from the folder above)."""
    import yaml

    sources = yaml.safe_load((MEDIA / "tunewright.yaml").read_text())["retrieval"]["sources"]
    assert sources == ["catalog.csv", "policies.md"]
    for name in sources:
        assert (MEDIA / name).is_symlink() and (MEDIA / name).resolve() == (SHOP / name).resolve()
