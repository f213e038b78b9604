"""Training throughput: Tunewright's loop vs plain `transformers.Trainer` + `peft`, same data, same run.

Both train the same LoRA (r=16, all linear layers, fp32) on the same Peachtree rows for the same
number of optimizer steps at the same batch size, on SmolLM2-135M-Instruct. Prints tokens/s
(non-padding tokens) and the ratio. Usage: python benchmarks/train_speed.py [--steps N] [--batch B]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tunewright.config import TrainSpec, load_recipe
from tunewright.models import load_model, load_tokenizer, prepare_base_model
from tunewright.synth.grounded import build_rows
from tunewright.train.loop import train_adapter
from tunewright.data.tokenize import collate, encode_chat

ROOT = Path(__file__).resolve().parents[1]


def peachtree_rows():
    recipe_path = ROOT / "examples" / "peachtree" / "tunewright.yaml"
    recipe = load_recipe(recipe_path)
    return [g.row for g in build_rows(recipe.build, lambda p: recipe_path.parent / p) if g.split == "train"]


def run_trainer_baseline(base, rows, spec: TrainSpec, out: Path) -> tuple[float, int]:
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    tokenizer = load_tokenizer(base)
    encoded = [encode_chat(tokenizer, [m.model_dump() for m in r.messages], spec.max_length) for r in rows]
    model = get_peft_model(load_model(base), LoraConfig(r=spec.r, lora_alpha=spec.alpha, target_modules="all-linear", task_type="CAUSAL_LM"))

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(encoded)

        def __getitem__(self, i):
            return encoded[i]

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=spec.batch_size, max_steps=spec.max_steps,
        learning_rate=spec.learning_rate, logging_steps=10_000, save_strategy="no", report_to=[],
        use_cpu=True, bf16=False, fp16=False, seed=spec.seed, dataloader_num_workers=0, disable_tqdm=True,
    )
    seen = []

    def counting_collate(batch):
        out = collate(batch, tokenizer.pad_token_id)
        seen.append(int(out["attention_mask"].sum()))
        return out

    trainer = Trainer(model=model, args=args, train_dataset=Rows(), data_collator=counting_collate)
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started, sum(seen)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    base = prepare_base_model("smollm2-135m-instruct")
    rows = peachtree_rows()
    spec = TrainSpec(max_steps=args.steps, batch_size=args.batch, learning_rate=1e-3, checkpoint_every=10_000)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, share in (("tunewright loop", True), ("  without prefix sharing", False)):
            out = Path(tmp) / label.strip().replace(" ", "-")
            run = train_adapter(base=base, rows=rows, spec=spec.model_copy(update={"share_prefix": share}),
                                run_dir=out / "run", adapter_dir=out / "adapter")
            results[label] = (run.train_seconds, run.tokens_per_second)
        seconds, tokens = run_trainer_baseline(base, rows, spec, Path(tmp) / "trainer")
        results["Trainer + peft (baseline)"] = (seconds, tokens / seconds)
    base_tps = results["Trainer + peft (baseline)"][1]
    print(f"rows={len(rows)} steps={args.steps} batch={args.batch} threads={torch.get_num_threads()} (fp32, LoRA r=16 all-linear)")
    for label, (seconds, tps) in results.items():
        print(f"{label:28s} {seconds:7.1f} s  {tps:7.1f} tokens/s  {tps / base_tps:5.2f}x baseline")


if __name__ == "__main__":
    main()
