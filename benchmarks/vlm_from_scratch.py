"""The native vision-language path end to end on this CPU, with a vision encoder trained from scratch.

No pretrained vision encoder ships on this machine's package registries, so this proves the training
path, not an encoder: a small CLIP-shaped encoder is initialised at random, joined to SmolLM2 with
`models.compose` (a new projector), and the encoder and projector train in full beside LoRA on the
language model (`train.vision: {targets: [language], full: [vision, connector]}`) on the Peachtree
screenshots and price tags (examples/peachtree/media, training split). The held-out images (fonts
never seen in training) are asked before and after; "answer contained" means the row's reference
(an error code, a price) is in the answer, as in `tunewright eval`.

Usage: python benchmarks/vlm_from_scratch.py [--epochs N] [--image-size PX]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from tunewright.config import TrainSpec
from tunewright.data.schema import ChatRow
from tunewright.data.vision import prompt_inputs
from tunewright.evaluate.metrics import get_metric
from tunewright.models import prepare_base_model
from tunewright.models.compose import compose_llava
from tunewright.models.vision import load_processor, load_vision_model
from tunewright.train.vision import train_vision_adapter

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "examples" / "peachtree" / "media"


def image_rows(split: str, folder: Path) -> list[ChatRow]:
    """The split's image rows with their files copied in as content-addressed refs (as an import stores them)."""
    rows = []
    for line in (MEDIA / f"{split}.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["meta"]["kind"] == "audio":
            continue
        for part in record["messages"][0]["content"]:
            if part["type"] == "image":
                data = (MEDIA / part["image"]).read_bytes()
                ref = f"media/{hashlib.sha256(data).hexdigest()}.jpg"
                (folder / ref).write_bytes(data)
                part["image"] = ref
        rows.append(ChatRow(**record))
    return rows


def encoder(folder: Path, image_size: int) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                              image_size=image_size, patch_size=16)
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def score(model, processor, rows, media: Path) -> list[bool]:
    hits = []
    model.eval()
    for row in rows:
        inputs = prompt_inputs(processor, row.messages, media)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        answer = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        hits.append(get_metric("contains").score(answer, row.reference) == 1.0)
    return hits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunewright-vlm-"))
    try:
        (work / "media").mkdir()
        train, held_out = image_rows("train", work), image_rows("eval", work)
        joined = compose_llava(encoder(work / "encoder", args.image_size),
                               prepare_base_model("smollm2-135m-instruct").folder, work / "joined")
        processor = load_processor(joined)
        before = score(load_vision_model(joined), processor, held_out, work)
        spec = TrainSpec(r=16, alpha=32, learning_rate=1e-3, batch_size=8, epochs=args.epochs, seed=0, max_length=512,
                         vision={"targets": ["language"], "full": ["vision", "connector"]})
        start = time.perf_counter()
        result = train_vision_adapter(folder=joined, rows=train, media_folder=work, spec=spec,
                                      adapter_dir=work / "adapter")
        seconds = time.perf_counter() - start
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(load_vision_model(joined), work / "adapter")
        after = score(tuned, processor, held_out, work)
        print(f"trained {result.steps} steps in {seconds:.0f} s ({result.tokens_per_second:.0f} tokens/s), "
              f"loss {result.losses[0]:.2f} -> {result.losses[-1]:.2f}")
        print(f"{'held-out kind':<14} {'rows':>4} {'untrained':>10} {'trained':>8}")
        for kind in ("screenshot", "label"):
            idx = [i for i, row in enumerate(held_out) if row.meta["kind"] == kind]
            print(f"{kind:<14} {len(idx):>4} {sum(before[i] for i in idx):>7}/{len(idx)} "
                  f"{sum(after[i] for i in idx):>5}/{len(idx)}")
        print(f"{'all':<14} {len(held_out):>4} {sum(before):>7}/{len(held_out)} {sum(after):>5}/{len(held_out)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
