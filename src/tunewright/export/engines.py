"""Files other engines read: an Ollama Modelfile beside the GGUF, and a vLLM multi-LoRA launch script.

Ollama's TEMPLATE is Go template syntax, not Jinja, so it cannot be copied from the tokenizer. We
only write one for ChatML-style templates, and only after rendering sample conversations through
the model's own Jinja template and our equivalent and finding them byte-identical: a template that
prompts the model differently from training would quietly degrade every answer.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewrightError
from ..io import atomic_write_text
from ..models.adapters import ADAPTER_CONFIG, read_adapter_config
from ..models.stops import added_tokens as _added_tokens

# Marker strings the sample conversations carry, so they can be found again in the rendering.
_USER, _REPLY, _SYSTEM = "PROBE-USER-1", "PROBE-REPLY-2", "PROBE-SYSTEM-3"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256)


def _render(tokenizer, messages, *, generation_prompt: bool = True) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


@dataclass(frozen=True)
class ChatML:
    start: str  # "<|im_start|>"
    end: str  # "<|im_end|>"
    default_system: str | None  # what the template inserts when the conversation has no system turn

    def render(self, messages) -> str:
        """What the Ollama TEMPLATE below produces, including Ollama's insertion of SYSTEM."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        turns = "".join(f"{self.start}{m['role']}\n{m['content']}{self.end}\n" for m in messages)
        return f"{turns}{self.start}assistant\n"

    def ollama_template(self) -> str:
        # Ollama puts a system message (from the request, or SYSTEM when the request has none) into
        # .Messages itself, so ranging over .Messages covers every role.
        return (
            f"{{{{- range .Messages }}}}{self.start}{{{{ .Role }}}}\n"
            f"{{{{ .Content }}}}{self.end}\n"
            f"{{{{ end }}}}{self.start}assistant\n"
        )


def chatml_parts(tokenizer) -> ChatML:
    """The ChatML pieces of the tokenizer's template, or an error when it is not ChatML."""
    refuse = ("the chat template is not ChatML-style (<|im_start|>role\\ncontent<|im_end|>), so no Ollama "
              "TEMPLATE is written for it: a translated template that renders prompts differently from "
              "training would degrade every answer; export 'gguf' alone and write the Modelfile by hand")
    if not tokenizer.chat_template:
        raise TunewrightError("the tokenizer has no chat template; an Ollama Modelfile needs one")
    try:
        single = _render(tokenizer, [{"role": "user", "content": _USER}])
    except Exception as exc:
        raise TunewrightError(f"{refuse} (rendering failed: {exc})") from None
    tokens = _added_tokens(tokenizer)
    start = next((t for t in tokens if single.endswith(f"{t}assistant\n")), None)
    at = single.rfind(_USER)
    end = next((t for t in tokens if single.startswith(t, at + len(_USER))), None) if at >= 0 else None
    if start is None or end is None:
        raise TunewrightError(refuse)
    default_system = None
    head = f"{start}system\n"
    if single.startswith(head):
        close = single.find(f"{end}\n", len(head))
        default_system = single[len(head):close] if close >= 0 else None
    parts = ChatML(start, end, default_system)
    samples = [
        [{"role": "user", "content": _USER}],
        [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER}],
        [{"role": "user", "content": _USER}, {"role": "assistant", "content": _REPLY},
         {"role": "user", "content": _USER + "b"}],
        [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER},
         {"role": "assistant", "content": _REPLY}, {"role": "user", "content": _USER + "b"}],
    ]
    for messages in samples:
        try:
            theirs = _render(tokenizer, messages)
        except Exception as exc:
            raise TunewrightError(f"{refuse} (rendering failed: {exc})") from None
        if theirs != parts.render(messages):
            raise TunewrightError(refuse)
    return parts


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a double-quoted string with \" and \n escapes


def modelfile_text(tokenizer, gguf_name: str) -> str:
    parts = chatml_parts(tokenizer)
    stops = [parts.end]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    template = parts.ollama_template()
    if '"""' in template or (parts.default_system and '"""' in parts.default_system):
        raise TunewrightError('the chat template contains """, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""', ""]
    if parts.default_system is not None:
        # The Jinja template inserts this when the conversation has no system turn; Ollama does
        # the same with SYSTEM.
        lines += [f'SYSTEM """{parts.default_system}"""', ""]
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, tokenizer, gguf_name: str) -> Path:
    atomic_write_text(path, modelfile_text(tokenizer, gguf_name))
    return path


# --- vLLM ------------------------------------------------------------------------------------


def vllm_lora_rank(config: dict) -> int:
    """The smallest --max-lora-rank vLLM accepts that covers every rank in the adapter."""
    rank = max([int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())])
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise TunewrightError(f"LoRA rank {rank} is above the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]})")


def check_vllm_adapter(adapter_path: Path | None) -> None:
    if adapter_path is None:
        return
    from ..methods import vllm_refusal

    config = read_adapter_config(adapter_path)
    refusal = vllm_refusal(config)
    if refusal:
        raise TunewrightError(refusal, field="formats")
    vllm_lora_rank(config)
    if not (adapter_path / "adapter_model.safetensors").is_file():
        raise TunewrightError("the adapter has no adapter_model.safetensors for vLLM to load", file=adapter_path)


def write_vllm(tmp: Path, final: Path, *, base_folder: Path, adapter_path: Path | None, name: str) -> tuple[Path, str]:
    """``serve-vllm.sh`` in ``tmp``, and the command it runs with paths as they will be under ``final``.

    vLLM applies LoRA on top of the original Hugging Face folder; it cannot load a LoRA onto a GGUF,
    so the script serves the base folder with the adapter as a LoRA module rather than the GGUF.
    """
    command = ["vllm", "serve", str(Path(base_folder).resolve())]
    lora: list[str] = []
    if adapter_path is not None:
        copy = tmp / "adapter"
        copy.mkdir()
        # Only the two files vLLM reads, in standard PEFT layout (safetensors, never pickle).
        for file in (ADAPTER_CONFIG, "adapter_model.safetensors"):
            shutil.copy2(adapter_path / file, copy / file)
        rank = vllm_lora_rank(read_adapter_config(adapter_path))
        command += ["--enable-lora", "--lora-modules", f"{name}={final.resolve() / 'adapter'}"]
        lora = ["--max-lora-rank", str(rank), "--max-loras", "1"]
    text = " ".join(shlex.quote(part) for part in command + lora)
    # The script finds the adapter beside itself, so the export folder can be moved or copied.
    in_script = " ".join(shlex.quote(part) for part in command[:3])
    if adapter_path is not None:
        in_script += f' --enable-lora --lora-modules "{name}=$HERE/adapter" ' + " ".join(lora)
    script = (
        "#!/usr/bin/env bash\n"
        "# Serves the base model with this adapter as a LoRA module (OpenAI-compatible API; extra\n"
        "# arguments go to vllm). vLLM applies LoRA to the Hugging Face base folder; it cannot load a\n"
        "# LoRA onto the GGUF, which is why this does not serve the .gguf next to it.\n"
        "set -euo pipefail\n"
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"\n'
        f'exec {in_script} "$@"\n'
    )
    path = tmp / "serve-vllm.sh"
    atomic_write_text(path, script)
    path.chmod(0o755)
    return path, text
