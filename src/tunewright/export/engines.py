"""Files other engines read: an Ollama Modelfile beside the GGUF, and a vLLM multi-LoRA launch script.

Ollama's TEMPLATE is Go template syntax, not Jinja, so it cannot be copied from the tokenizer. It is
translated from what the model's own Jinja template writes: sample conversations with marker
contents are rendered, the text around each marker gives every role's prefix and suffix (ChatML's
``<|im_start|>user\n`` ... ``<|im_end|>\n``, Llama 3's header tokens, Phi-3's ``<|user|>``), and a
template is written only when rendering the samples through our equivalent of it gives the Jinja
output byte for byte: a template that prompts the model differently from training would quietly
degrade every answer. Templates that fold a system message into a user turn (Gemma, Mistral) or
reject one are refused, naming that: a per-role TEMPLATE cannot express the fold.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewrightError
from ..io import atomic_write_text
from ..models.adapters import ADAPTER_CONFIG, read_adapter_config
from ..models.chat import TEMPLATE_FLAGS
from ..models.stops import end_of_turn_token

# Marker strings the sample conversations carry, so they can be found again in the rendering.
_USER, _REPLY, _SYSTEM = "PROBE-USER-1", "PROBE-REPLY-2", "PROBE-SYSTEM-3"
_ROLES = ("system", "user", "assistant")
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256)
_REFUSE = ("no Ollama TEMPLATE is written for this chat template: {why}; a template that renders prompts "
           "differently from training would degrade every answer, so export 'gguf' alone and write the "
           "Modelfile by hand")


def _render(tokenizer, messages, *, generation_prompt: bool = True) -> str:
    # The flags every stage renders with (Qwen3's thinking off), without folding a system message:
    # a template that needs the fold is what this module must find out.
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         **TEMPLATE_FLAGS)


def _refuse(why: str) -> TunewrightError:
    return TunewrightError(_REFUSE.format(why=why), field="chat_template")


@dataclass(frozen=True)
class TurnTemplate:
    """A chat template that writes each message as prefix + content + suffix of its role."""

    lead: str  # what the Jinja template writes before everything (a bos token), "" if none
    prefix: dict[str, str]  # role -> text before the content
    suffix: dict[str, str]  # role -> text after the content
    generation: str  # the generation prompt after the last turn (Qwen3's adds an empty thinking block)
    default_system: str | None  # what the template inserts when the conversation has no system turn

    def render(self, messages) -> str:
        """What the Jinja template should write, and the Ollama TEMPLATE below does (Ollama inserting
        SYSTEM; llama.cpp or the TEMPLATE writing ``lead``)."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        turns = "".join(f"{self.prefix[m['role']]}{m['content']}{self.suffix[m['role']]}" for m in messages)
        return f"{self.lead}{turns}{self.generation}"

    def ollama_template(self, *, with_lead: bool) -> str:
        """Go template text. Ollama puts a system message (from the request, or SYSTEM when the
        request has none) into .Messages itself, so ranging over .Messages covers every role.
        ``with_lead``: write the bos text too (only when the GGUF's tokenizer does not add it)."""
        preamble = ""
        if self.default_system == "":
            # An empty default system turn (Llama 3.1 writes its header block anyway): Ollama inserts no
            # empty SYSTEM, so the template writes the block itself when the first turn is not a system one.
            preamble = (f'{{{{ if ne (index .Messages 0).Role "system" }}}}{self.prefix["system"]}'
                        f'{self.suffix["system"]}{{{{ end }}}}')
        branches = "{{ else }}".join(f'{{{{ if eq .Role "{role}" }}}}{self.prefix[role]}{{{{ .Content }}}}'
                                     f"{self.suffix[role]}" for role in _ROLES)
        closing = "{{ end }}" * len(_ROLES)
        return f"{self.lead if with_lead else ''}{preamble}{{{{ range .Messages }}}}{branches}{closing}{{{{ end }}}}" \
               f"{self.generation}"


def _between(text: str, markers: list[str]) -> list[str] | None:
    """The text before, between and after ``markers``, found in order; None if one is missing."""
    pieces, at = [], 0
    for marker in markers:
        found = text.find(marker, at)
        if found < 0:
            return None
        pieces.append(text[at:found])
        at = found + len(marker)
    return [*pieces, text[at:]]


def _common_suffix(a: str, b: str) -> str:
    return os.path.commonprefix([a[::-1], b[::-1]])[::-1]  # commonprefix compares characters, not paths


_SAMPLES = [
    [{"role": "user", "content": _USER}],
    [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER}],
    [{"role": "user", "content": _USER}, {"role": "assistant", "content": _REPLY},
     {"role": "user", "content": _USER + "b"}],
    [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER},
     {"role": "assistant", "content": _REPLY}, {"role": "user", "content": _USER + "b"}],
]


def turn_template(tokenizer) -> TurnTemplate:
    """Every role's prefix and suffix in the tokenizer's chat template, checked by rendering the
    samples both ways; an error that says what the template does instead."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunewrightError("the tokenizer has no chat template; an Ollama Modelfile needs one", field="chat_template")
    try:
        plain = _render(tokenizer, _SAMPLES[0], generation_prompt=False)
        asked = _render(tokenizer, _SAMPLES[0])
        no_system = _render(tokenizer, _SAMPLES[2])
    except Exception as exc:
        raise _refuse(f"rendering a user turn failed ({exc})") from None
    try:
        full = _render(tokenizer, _SAMPLES[3])
    except Exception as exc:
        raise _refuse(f"it rejects a system message ({exc})") from None
    shared = len(os.path.commonprefix([asked, plain]))  # Phi-3 writes eos where the generation prompt would go
    gen = asked[shared:]  # may be empty: Mistral's prompt ends with the user turn's [/INST]
    pieces = _between(full, [_SYSTEM, _USER, _REPLY, _USER + "b"])
    if pieces is None:
        raise _refuse("a system message does not appear as its own turn")
    head, sys_user, user_reply, reply_user, tail = pieces
    user_end = tail[:len(tail) - len(gen)]
    if not tail.endswith(gen) or not user_reply.startswith(user_end):
        raise _refuse("the last user turn is not closed the way earlier ones are")
    bos = tokenizer.bos_token or ""
    lead = bos if bos and full.startswith(bos) else ""
    head2 = no_system[:no_system.find(_USER)]
    candidates = []
    if head2.startswith(lead):  # no system turn inserted: what opens the first user turn is its prefix
        candidates.append((head2[len(lead):], None))
    user_prefix = _common_suffix(sys_user, reply_user)  # a system turn is inserted by default
    if head2.startswith(head) and head2.endswith(sys_user) and len(head2) >= len(head) + len(sys_user):
        candidates.append((user_prefix, head2[len(head):len(head2) - len(sys_user)]))
    for prefix_user, default_system in candidates:
        if not (sys_user.endswith(prefix_user) and reply_user.endswith(prefix_user)):
            continue
        turns = TurnTemplate(
            lead=lead,
            prefix={"system": head[len(lead):], "user": prefix_user, "assistant": user_reply[len(user_end):]},
            suffix={"system": sys_user[:len(sys_user) - len(prefix_user)], "user": user_end,
                    "assistant": reply_user[:len(reply_user) - len(prefix_user)]},
            generation=gen, default_system=default_system)
        if all(_render(tokenizer, m) == turns.render(m) for m in _SAMPLES):
            return turns
    raise _refuse("its turns are not a fixed prefix and suffix per role (a system message folded into the "
                  "first user turn, or text that depends on the turn's position)")


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a double-quoted string with \" and \n escapes


def modelfile_text(tokenizer, gguf_name: str, *, bos_added: bool) -> str:
    """``bos_added``: the GGUF's tokenizer adds the bos token itself, so the TEMPLATE must not."""
    turns = turn_template(tokenizer)
    if bos_added and not turns.lead:
        raise _refuse(f"the GGUF's tokenizer puts {tokenizer.bos_token} before every prompt, which the chat "
                      "template, and so training, never writes")
    template = turns.ollama_template(with_lead=not bos_added)
    for text in (*turns.prefix.values(), *turns.suffix.values(), turns.lead):
        if "{{" in text or "}}" in text:
            raise _refuse("it writes '{{' or '}}', which Go templates read as actions")
    if '"""' in template or (turns.default_system and '"""' in turns.default_system):
        raise TunewrightError('the chat template contains """, which a Modelfile cannot quote', field="chat_template")
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""', ""]
    if turns.default_system:
        # The Jinja template inserts this when the conversation has no system turn; Ollama does
        # the same with SYSTEM.
        lines += [f'SYSTEM """{turns.default_system}"""', ""]
    stops = [t for t in dict.fromkeys([end_of_turn_token(tokenizer), tokenizer.eos_token]) if t]
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, tokenizer, gguf_name: str, *, bos_added: bool) -> Path:
    atomic_write_text(path, modelfile_text(tokenizer, gguf_name, bos_added=bos_added))
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
