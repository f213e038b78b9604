"""Export an adapter (on its base) for other engines: merged folder, GGUF, Ollama, vLLM; optionally checked.

Everything is written into a temporary folder beside ``out_dir`` and renamed onto it at the end, so
a failed export leaves nothing behind. A failed parity check is not a failed export: the files and
``check.json`` are kept and ``passed`` says False, so the caller can decide not to register them.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import TunewrightError
from ..io import atomic_dir, atomic_write_json
from ..models.adapters import read_adapter_config
from ..models.loading import BaseModelInfo
from .gguf_writer import GGUF_DTYPES

EXPORT_FORMATS = ("merged", "gguf", "ollama", "vllm")
_MERGING_FORMATS = ("merged", "gguf", "ollama")  # what needs the adapter folded into the weights
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path]  # format -> main file/folder written
    check: dict | None  # the parity report, None when not asked
    passed: bool  # True when no check was asked, else the check's verdict
    vllm_command: str | None = None  # the command serve-vllm.sh runs, when vllm was exported
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TunewrightError(f"unreadable {path.name}: {exc}", file=path) from None


def _validate(base: BaseModelInfo, adapter_path: Path | None, out_dir: Path, *, name: str,
              formats: Sequence[str], gguf_dtype: str, check: bool) -> list[str]:
    """Every refusable input refused before any weight is read; the formats to write, deduplicated."""
    from ..methods import merge_policy
    from .engines import check_vllm_adapter
    from .gguf_writer import check_gguf_supported

    wanted = list(dict.fromkeys(formats))
    if not wanted:
        raise TunewrightError(f"no export format asked for (known: {', '.join(EXPORT_FORMATS)})", field="formats")
    unknown = [f for f in wanted if f not in EXPORT_FORMATS]
    if unknown:
        raise TunewrightError(f"unknown export format '{unknown[0]}' (known: {', '.join(EXPORT_FORMATS)})",
                              field="formats")
    if gguf_dtype not in GGUF_DTYPES:
        raise TunewrightError(f"unknown GGUF dtype '{gguf_dtype}' (known: {', '.join(GGUF_DTYPES)})",
                              field="gguf_dtype")
    if not _NAME.match(name or ""):
        raise TunewrightError(f"export name '{name}' must be letters, digits, '.', '_' or '-'", field="name")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TunewrightError("output folder exists and is not empty; choose a new one", file=out_dir)
    if adapter_path is not None:
        config = read_adapter_config(Path(adapter_path))
        peft_type = str(config.get("peft_type"))
        policy = merge_policy(peft_type)
        merging = [f for f in wanted if f in _MERGING_FORMATS]
        if merging and not policy.mergeable:
            method = "/".join(policy.methods) or peft_type
            raise TunewrightError(
                f"method {method} cannot be exported as {', '.join(merging)}: these need the adapter merged "
                f"into the base weights, and {policy.reason}", field="formats")
    if "vllm" in wanted:
        check_vllm_adapter(adapter_path)
    base_config = _read_json(base.folder / "config.json")
    if "gguf" in wanted or "ollama" in wanted:
        check_gguf_supported(base_config)
    if check and not any(f in wanted for f in _MERGING_FORMATS):
        raise TunewrightError("the parity check compares the merged and GGUF exports; ask for one of "
                              f"{', '.join(_MERGING_FORMATS)} with it", field="check")
    return wanted


def export_adapter(base: BaseModelInfo, adapter_path: Path | None, out_dir: Path, *, name: str,
                   formats: Sequence[str] = ("merged", "gguf", "ollama", "vllm"), gguf_dtype: str = "f32",
                   check: bool = False, probes: Sequence[list[dict]] | None = None,
                   max_new_tokens: int = 32) -> ExportResult:
    """Write the asked formats into ``out_dir`` (which must be new or empty) and, if asked, check parity."""
    from transformers import AutoTokenizer

    from .engines import chatml_parts, write_modelfile, write_vllm
    from .gguf_writer import write_gguf
    from .merged import merged_model, save_merged

    started = time.perf_counter()
    out_dir = Path(out_dir)
    adapter_path = Path(adapter_path).resolve() if adapter_path is not None else None
    wanted = _validate(base, adapter_path, out_dir, name=name, formats=formats, gguf_dtype=gguf_dtype, check=check)
    tokenizer = AutoTokenizer.from_pretrained(base.folder)
    if "ollama" in wanted:
        chatml_parts(tokenizer)  # a non-ChatML template is refused before minutes of work
    write_gguf_file = "gguf" in wanted or "ollama" in wanted  # Ollama's Modelfile points at the GGUF
    gguf_name = f"{name}.gguf"
    files: dict[str, Path] = {}
    notes: list[str] = []
    report, vllm_command = None, None

    with atomic_dir(out_dir) as tmp:
        if "merged" in wanted or write_gguf_file:
            model = merged_model(base, adapter_path)
            if "merged" in wanted:
                save_merged(model, tokenizer, tmp / "merged")
                files["merged"] = out_dir / "merged"
            if write_gguf_file:
                write_gguf(model, tokenizer, tmp / gguf_name, dtype=gguf_dtype, name=name)
                files["gguf"] = out_dir / gguf_name
            del model
        if "ollama" in wanted:
            write_modelfile(tmp / "Modelfile", tokenizer, gguf_name)
            files["ollama"] = out_dir / "Modelfile"
            notes.append(f"ollama create {name} -f {out_dir / 'Modelfile'}")
        if "vllm" in wanted:
            _, vllm_command = write_vllm(tmp, out_dir, base_folder=base.folder, adapter_path=adapter_path, name=name)
            files["vllm"] = out_dir / "serve-vllm.sh"
        if check:
            report = _run_check(base, adapter_path, tmp, files, gguf_name, gguf_dtype, probes, max_new_tokens)
            atomic_write_json(tmp / "check.json", report)
        atomic_write_json(tmp / "export.json", {
            "name": name, "base_ref": base.ref, "base_sha256": base.sha256,
            "adapter": str(adapter_path) if adapter_path else None, "formats": wanted, "gguf_dtype": gguf_dtype,
            "files": {fmt: path.name for fmt, path in files.items()}, "vllm_command": vllm_command,
            "check_passed": report["passed"] if report else None,
        })
    passed = report["passed"] if report is not None else True
    return ExportResult(out_dir=out_dir, files=files, check=report, passed=passed, vllm_command=vllm_command,
                        seconds=round(time.perf_counter() - started, 2), notes=notes)


def _run_check(base, adapter_path, tmp: Path, files: dict, gguf_name: str, gguf_dtype: str, probes,
               max_new_tokens: int) -> dict:
    from .check import run_check

    return run_check(base, adapter_path,
                     merged_dir=tmp / "merged" if "merged" in files else None,
                     gguf_path=tmp / gguf_name if "gguf" in files else None,
                     gguf_dtype=gguf_dtype, probes=probes, max_new_tokens=max_new_tokens)
