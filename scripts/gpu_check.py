"""GPU paths on one CUDA GPU with SmolLM2, timed: QLoRA (bitsandbytes NF4), bf16 LoRA with the
project's own loop, and the server answering on CUDA. Prints one JSON line per check.

Run by ``scripts/gpu-check.sh`` (under 8 minutes on one GPU). On a machine without CUDA it stops at
once with the reason; CI never runs it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows():
    from tunewright.data.schema import ChatRow

    return [ChatRow(messages=[{"role": "user", "content": f"How much does item {i} cost?"},
                              {"role": "assistant", "content": f"Item {i} costs ${i * 7 + 3}."}]) for i in range(256)]


def train(method: str, out: Path) -> dict:
    import torch

    from tunewright.config import TrainSpec
    from tunewright.models import prepare_base_model
    from tunewright.train.loop import train_adapter

    base = prepare_base_model("smollm2-135m-instruct")
    spec = TrainSpec(method=method, precision="bf16", r=16, alpha=32, batch_size=16, max_steps=40,
                     checkpoint_every=1000, learning_rate=1e-3, max_length=128)
    torch.cuda.reset_peak_memory_stats()
    result = train_adapter(base=base, rows=_rows(), spec=spec, run_dir=out / method / "run",
                           adapter_dir=out / method / "adapter")
    return {"check": f"train {method}", "steps": result.steps, "tokens_per_s": round(result.tokens_per_second),
            "seconds": round(result.train_seconds, 1), "first_loss": round(result.losses[0], 3),
            "last_loss": round(result.losses[-1], 3), "precision": result.extra.get("precision"),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20)}


def serve(adapter: Path, out: Path) -> dict:
    workspace = out / "ws"
    cli = [sys.executable, "-m", "tunewright"]
    subprocess.run(cli + ["init", str(workspace), "--from", str(ROOT / "examples" / "peachtree")], check=True,
                   capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(cli + ["--workspace", str(workspace), "serve", "--port", str(port), "--adapter",
                                     str(adapter)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10))["data"]
        name = models[-1]["id"]  # the adapter, listed after the base
        body = json.dumps({"model": name, "max_tokens": 32,
                           "messages": [{"role": "user", "content": "How much does item 3 cost?"}]}).encode()
        started = time.perf_counter()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(request, timeout=120))
        return {"check": "serve on cuda", "model": name, "seconds": round(time.perf_counter() - started, 2),
                "answer": answer["choices"][0]["message"]["content"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"check": "cuda", "ok": False, "reason": "no CUDA device: nothing to check here"}))
        return 2
    print(json.dumps({"check": "cuda", "ok": True, "device": torch.cuda.get_device_name(0),
                      "bf16": torch.cuda.is_bf16_supported()}), flush=True)
    out = Path(tempfile.mkdtemp(prefix="tunewright-gpu-"))
    for method in ("qlora", "lora"):
        print(json.dumps(train(method, out)), flush=True)
    print(json.dumps(serve(out / "lora" / "adapter", out)), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
