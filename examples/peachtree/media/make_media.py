"""Generate the Peachtree multi-modal demo set: checkout-error screenshots, price-tag photos and spoken questions.

    python examples/peachtree/media/make_media.py OUT_DIR --seed 0 [--limit N] [--kinds screenshot,label,audio]

writes OUT_DIR/train.jsonl and OUT_DIR/eval.jsonl (chat rows whose user turn carries an image or audio
part as a relative path, `images/...jpg` or `audio/...flac`; importing the files turns those into
content-addressed refs), OUT_DIR/eval-typed.jsonl (each spoken eval question as typed text, kind
"audio, typed"), OUT_DIR/images/, OUT_DIR/audio/ and OUT_DIR/manifest.json (every file, how it
was made and which split it is in). Answers come from ../catalog.csv, ../policies.md and the checkout
error table in shop.py.

Every choice for item i of a kind and split is drawn from its own generator seeded by
(seed, kind, split, i), so a run with --limit N makes exactly the first N items of a full run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import PIL

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling modules, also when started from elsewhere

import render  # noqa: E402
import shop  # noqa: E402
import speech  # noqa: E402
from tunewright.errors import TunewrightError  # noqa: E402
from tunewright.io import atomic_dir, atomic_write_json, atomic_write_jsonl, ensure_writable_dir  # noqa: E402

KINDS = ("screenshot", "label", "audio")
COUNTS = {"screenshot": {"train": 24, "eval": 8}, "label": {"train": 24, "eval": 8},
          "audio": {"train": 24, "eval": 24}}

# The held-out partition: eval media use fonts, voices and noise levels that training never sees, so an
# eval score measures reading and hearing, not recognising a rendering it was trained on.
PARTITION = {
    "train": {"fonts": ["DejaVu Sans", "DejaVu Sans Mono", "DejaVu Serif", "Liberation Sans", "Liberation Mono"],
              "voices": ["en-us", "en-gb", "en+f3", "en+m3", "en-us+f2"],
              "snr_db": [30, 24, 18]},
    "eval": {"fonts": ["Liberation Serif", "Liberation Sans Narrow"],
             "voices": ["en+f4", "en-gb-scotland+m7"],
             "snr_db": [15, 12]},
}
# Varied in both splits alike.
SHARED = {"themes": ["light", "dark"], "font_sizes": [13, 14, 15, 16], "screen_widths": [760, 800, 840, 880],
          "label_canvases": [[640, 480], [720, 540], [800, 600]], "jpeg_quality": [60, 85],
          "speeds_wpm": [140, 155, 170, 185], "noise_colours": sorted(speech.NOISE_COLOURS),
          "surfaces": sorted(render.SURFACES)}

CUSTOMERS = ("Jordan Lee", "Sam Rivera", "Alex Morgan", "Casey Kim", "Riley Brooks", "Taylor Reed")
US_ADDRESSES = (("1420 Oak Hill Rd", "Decatur, GA 30030"), ("88 Elm Street", "Asheville, NC 28801"),
                ("501 Canyon Rd", "Boulder, CO 80302"), ("77 Harbor Way", "Portland, ME 04101"))
FOREIGN_ADDRESSES = {"Canada": ("220 King St W", "Toronto, ON M5H 1K4"),
                     "Mexico": ("Av. Reforma 150", "CDMX 06600"),
                     "United Kingdom": ("14 Baker Lane", "Leeds LS1 4AP"),
                     "Germany": ("Lindenstrasse 12", "10969 Berlin"),
                     "Australia": ("9 Bondi Rd", "Sydney NSW 2026")}
PAPERS = ((250, 248, 240), (236, 220, 188), (255, 255, 255), (252, 238, 226))
INKS = ((28, 28, 30), (40, 36, 60), (20, 40, 32))
ACCENTS = ((201, 90, 36), (150, 40, 40), (30, 90, 70))
VOICE_NOTES = ("see my voice message", "Sent you a voice note.", None)


class Shop:
    """What the generator reads once: the catalog, the policies and the sentences derived from them."""

    def __init__(self, catalog: Path, policies: Path) -> None:
        self.products = shop.load_catalog(catalog)
        self.policies = shop.Policies(policies)
        self.free_over, self.fee = shop.shipping_rule(self.policies)
        self.support = shop.support_line(self.policies)
        self.ship_banner, self.ship_line = shop.shipping_banner(self.policies)
        self.spoken_policy = [(topic, question, self.policies.line(section, phrase), reference)
                              for topic, question, section, phrase, reference in shop.SPOKEN_POLICY_QUESTIONS]


def money(value: float) -> str:
    return f"${value:,.2f}"


def jpeg(image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


# --- One item of each kind: file bytes, manifest entry, and the row's question, answer and reference -----

def screenshot(facts: Shop, split: str, i: int, rng: random.Random) -> tuple[bytes, dict, str | None, str, str]:
    error = shop.CHECKOUT_ERRORS[i % len(shop.CHECKOUT_ERRORS)]
    cart = rng.sample(facts.products, rng.choice((1, 2)))
    missing = cart[0] if error.key == "out-of-stock" else None
    promo = rng.choice(shop.PROMO_CODES) if error.key == "promo-expired" else ""
    country = rng.choice(shop.FOREIGN_COUNTRIES) if error.key == "address-not-deliverable" else "United States"
    street, city = FOREIGN_ADDRESSES[country] if country in FOREIGN_ADDRESSES else rng.choice(US_ADDRESSES)
    customer = rng.choice(CUSTOMERS)
    subtotal = sum(p.price_usd for p in cart)
    shipping = 0.0 if subtotal > facts.free_over else float(facts.fee)
    fill = {"policy": facts.ship_banner, "policy_full": facts.ship_line, "promo": promo,
            "product_name": missing.name if missing else "", "product_code": missing.code if missing else ""}
    spec = render.Screenshot(
        font=PARTITION[split]["fonts"][i % len(PARTITION[split]["fonts"])], font_size=rng.choice(SHARED["font_sizes"]),
        theme=SHARED["themes"][(i + i // 6) % 2], width=rng.choice(SHARED["screen_widths"]),
        code=error.code, title=error.title, message=error.message.format(**fill), field=error.field,
        cart=tuple((p.code, p.name, money(p.price_usd)) for p in cart), out_of_stock=missing.code if missing else "",
        subtotal=money(subtotal), shipping="Free" if shipping == 0 else money(shipping),
        total=money(subtotal + shipping),
        values=(("name", customer), ("email", customer.split()[0].lower() + "@example.com"),
                ("street", street), ("city", city), ("country", country),
                ("card", f"\u2022\u2022\u2022\u2022 \u2022\u2022\u2022\u2022 \u2022\u2022\u2022\u2022 {rng.randint(1000, 9999)}"),
                ("expiry", f"{rng.randint(1, 12):02d} / {rng.randint(27, 31)}"), ("cvv", "\u2022\u2022\u2022"),
                ("promo", promo)))
    image = render.render_screenshot(spec)
    quality = rng.randint(*SHARED["jpeg_quality"])
    entry = {"error": error.key, "banner": render.banner_lines(spec), "jpeg_quality": quality, "width": image.width, "height": image.height,
             **asdict(spec)}
    answer = f"{error.answer.format(**fill)} {facts.support}"
    return jpeg(image, quality), entry, rng.choice(shop.SCREENSHOT_QUESTIONS), answer, error.code


def label(facts: Shop, split: str, i: int, rng: random.Random) -> tuple[bytes, dict, str | None, str, str]:
    count = len(facts.products)
    # Training sees every product; eval re-photographs products in held-out fonts.
    product = facts.products[i % count if split == "train" else (5 * i + 3) % count]
    topic = tuple(shop.LABEL_QUESTIONS)[(i + (split == "eval")) % len(shop.LABEL_QUESTIONS)]
    canvas = tuple(rng.choice(SHARED["label_canvases"]))
    spec = render.Label(
        font=PARTITION[split]["fonts"][i % len(PARTITION[split]["fonts"])],
        name=product.name, code=product.code, price=product.price,
        paper=rng.choice(PAPERS), ink=rng.choice(INKS), accent=rng.choice(ACCENTS),
        tag_width=int(canvas[0] * rng.uniform(0.55, 0.7)), surface=rng.choice(SHARED["surfaces"]), canvas=canvas,
        corners=tuple(round(rng.uniform(-0.06, 0.06), 3) for _ in range(8)),
        rotation=round(rng.uniform(-14, 14), 2), light=(round(rng.uniform(0, 360), 1), round(rng.uniform(0.25, 0.6), 3)),
        blur=round(rng.uniform(0.5, 1.2), 2), grain=round(rng.uniform(1.5, 3.0), 2), seed=rng.getrandbits(32))
    image = render.render_label(spec)
    quality = rng.randint(*SHARED["jpeg_quality"])
    entry = {"text": {"name": spec.name, "code": spec.code, "price": spec.price},
             "lines": render.tag_lines(spec), "question": topic,
             "jpeg_quality": quality, "width": image.width, "height": image.height, **asdict(spec)}
    reference = {"price": product.price, "warranty": product.warranty, "identity": product.name}[topic]
    return (jpeg(image, quality), entry, rng.choice(shop.LABEL_QUESTIONS[topic]),
            shop.product_answer(topic, product, pointing=True), reference)


def audio(facts: Shop, split: str, i: int, rng: random.Random) -> tuple[bytes, dict, str | None, str, str]:
    topic = ("price", "warranty", "returns", "shipping")[i % 4]
    offset = 0 if split == "train" else 3  # eval asks about other products and policies than train starts with
    if topic in ("price", "warranty"):
        product = facts.products[(7 * (i // 4) + offset + (topic == "warranty")) % len(facts.products)]
        text = rng.choice(shop.SPOKEN_PRODUCT_QUESTIONS[topic]).format(name=product.name)
        answer = shop.product_answer(topic, product, pointing=False)
        reference = product.price if topic == "price" else product.warranty
    else:
        asked = [q for q in facts.spoken_policy if q[0] == topic]
        _, text, answer, reference = asked[(i // 4 + offset) % len(asked)]
    levels = PARTITION[split]["snr_db"]
    clip = speech.Clip(text=text, voice=PARTITION[split]["voices"][i % len(PARTITION[split]["voices"])],
                       speed=rng.choice(SHARED["speeds_wpm"]), noise=rng.choice(SHARED["noise_colours"]),
                       snr_db=levels[(i // 2) % len(levels)], lead_s=round(rng.uniform(0.2, 0.6), 2),
                       tail_s=round(rng.uniform(0.2, 0.5), 2), seed=rng.getrandbits(32))
    data, duration = speech.speak(clip)
    entry = {"topic": topic, "duration_s": duration, "sample_rate": speech.SAMPLE_RATE, **asdict(clip)}
    return data, entry, rng.choice(VOICE_NOTES), answer, reference


MAKERS = {"screenshot": (screenshot, "images", "jpg", "image"), "label": (label, "images", "jpg", "image"),
          "audio": (audio, "audio", "flac", "audio")}


def generate(facts: Shop, seed: int, kinds: list[str], limit: int | None):
    """All files in memory (a few MB), so a failure part-way writes nothing."""
    files: dict[str, bytes] = {}
    entries, rows = [], {"train": [], "eval": [], "eval-typed": []}
    for split in ("train", "eval"):
        for kind in kinds:
            make, folder, ext, part = MAKERS[kind]
            count = COUNTS[kind][split] if limit is None else min(limit, COUNTS[kind][split])
            for i in range(count):
                name = f"{kind}-{split}-{i:03d}"
                path = f"{folder}/{name}.{ext}"
                data, entry, question, answer, reference = make(facts, split, i,
                                                                random.Random(f"{seed}/{kind}/{split}/{i}"))
                content = [{"type": part, part: path}] + ([{"type": "text", "text": question}] if question else [])
                rows[split].append({"messages": [{"role": "user", "content": content},
                                                 {"role": "assistant", "content": answer}],
                                    "reference": reference, "meta": {"id": name, "kind": kind, "split": split}})
                if kind == "audio" and split == "eval":
                    # The same question typed: what the audio step costs is the gap between the two.
                    rows["eval-typed"].append({"messages": [{"role": "user", "content": entry["text"]},
                                                            {"role": "assistant", "content": answer}],
                                               "reference": reference,
                                               "meta": {"id": f"{name}-typed", "kind": "audio, typed", "split": split}})
                files[path] = data
                entries.append({"path": path, "kind": kind, "split": split, "row": name,
                                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **entry})
    return files, entries, rows


def manifest(args, kinds: list[str], entries: list[dict]) -> dict:
    tools = {"pillow": PIL.__version__, "numpy": np.__version__}
    if "audio" in kinds:
        tools.update(speech.tool_versions())
    fonts = sorted({e["font"] for e in entries if "font" in e})
    counts = {split: {kind: sum(e["kind"] == kind and e["split"] == split for e in entries) for kind in kinds}
              for split in ("train", "eval")}
    return {"generator": "examples/peachtree/media/make_media.py", "seed": args.seed, "limit": args.limit,
            "kinds": kinds, "sources": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                        for p in (args.catalog, args.policies)},
            "partition": PARTITION, "shared": SHARED, "tools": tools,
            "fonts": {family: render.font_sha256(family) for family in fonts},
            "counts": counts, "total_bytes": sum(e["bytes"] for e in entries), "files": entries}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many items of each kind per split")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS))
    parser.add_argument("--catalog", type=Path, default=HERE.parent / "catalog.csv")
    parser.add_argument("--policies", type=Path, default=HERE.parent / "policies.md")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise TunewrightError(f"unknown kind {unknown[0]!r}" if unknown else "names no kind",
                              field="--kinds")
    if args.limit is not None and args.limit < 1:
        raise TunewrightError(f"must be at least 1, got {args.limit}", field="--limit")
    if "audio" in kinds:
        speech.require_tools()
    facts = Shop(args.catalog, args.policies)
    out = ensure_writable_dir(args.out_dir)
    files, entries, rows = generate(facts, args.seed, kinds, args.limit)
    for folder in ("images", "audio"):  # replaced whole, so no file of an earlier run lingers
        with atomic_dir(out / folder) as tmp:
            for path, data in files.items():
                if path.startswith(folder + "/"):
                    (tmp / path.split("/", 1)[1]).write_bytes(data)
    for name, split_rows in rows.items():
        atomic_write_jsonl(out / f"{name}.jsonl", split_rows)
    result = manifest(args, kinds, entries)
    atomic_write_json(out / "manifest.json", result)  # last: its presence means the set is complete
    return result


def main(argv: list[str] | None = None) -> int:
    try:
        result = run(parse(argv))
    except TunewrightError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    counts = ", ".join(f"{split}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
                       for split, kinds in result["counts"].items())
    print(f"wrote {len(result['files'])} files ({result['total_bytes'] / 1e6:.2f} MB); {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
