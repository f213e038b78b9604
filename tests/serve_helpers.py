"""A tiny-model workspace with a few adapters, and a real uvicorn server on a free port."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch


def make_adapter(base_dir: Path, out: Path, *, seed: int, kind: str = "lora", r: int = 4) -> Path:
    """An adapter with random (not zero) weights, so its answers differ from the base and each other."""
    from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    if kind == "lora":
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False)
    elif kind == "dora":
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False, use_dora=True)
    elif kind == "ia3":
        config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                           init_ia3_weights=False)
    elif kind == "prompt":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    else:
        raise ValueError(kind)
    tuned = get_peft_model(model, config)
    if kind == "lora":
        with torch.no_grad():  # big enough to move greedy answers away from the base
            for name, p in tuned.named_parameters():
                if "lora_B" in name:
                    p.mul_(20)
    tuned.save_pretrained(out)
    return out


def serve_workspace(root: Path, tiny_model_dir: Path, adapters: dict[str, dict], serve: dict | None = None):
    """A workspace on the tiny model with ``adapters`` (name -> make_adapter kwargs) registered."""
    from tunewright.config import Recipe
    from tunewright.io import sha256_file
    from tunewright.workspace import Workspace

    recipe = Recipe(name="shop", base_model=str(tiny_model_dir), serve=serve or {})
    workspace = Workspace.init(root, recipe)
    for name, kwargs in adapters.items():
        folder = make_adapter(tiny_model_dir, root / "adapters" / name, **kwargs)
        workspace.registry.add_adapter(name=name, path=str(folder),
                                       weights_sha256=sha256_file(folder / "adapter_model.safetensors"),
                                       method=kwargs.get("kind", "lora"), run_id=None,
                                       base_model_ref=str(tiny_model_dir), base_model_sha256=None)
    return workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(state):
    """The app under a real uvicorn on 127.0.0.1, so clients talk real HTTP."""
    import uvicorn

    from tunewright.serve.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
