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
from ..reports import CheckReport
from .formats import EXPORTERS, ExportJob, export_formats
from .gguf_writer import GGUF_DTYPES

EXPORT_FORMATS = export_formats()  # the built-ins; plugins registered later are found by name too
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path]  # format -> main file/folder written
    check: CheckReport | None  # the parity report, None when not asked
    passed: bool  # True when no check was asked, else the check's verdict
    vllm_command: str | None = None  # the command serve-vllm.sh runs, when vllm was exported
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TunewrightError(f"unreadable {path.name}: {exc}", file=path) from None


def check_target(out_dir: Path, name: str) -> None:
    """The export's name and folder, refused before any weight is read (vision exports too)."""
    if not _NAME.match(name or ""):
        raise TunewrightError(f"export name '{name}' must be letters, digits, '.', '_' or '-'", field="name")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TunewrightError("output folder exists and is not empty; choose a new one", file=out_dir)


def check_mergeable(adapter_path: Path | None, merging: Sequence[str]) -> None:
    """Refuse, before any weight is read, formats that need the adapter merged when its method cannot be."""
    from ..methods import merge_policy

    if adapter_path is None or not merging:
        return
    peft_type = str(read_adapter_config(Path(adapter_path)).get("peft_type"))
    policy = merge_policy(peft_type)
    if not policy.mergeable:
        method = "/".join(policy.methods) or peft_type
        raise TunewrightError(
            f"method {method} cannot be exported as {', '.join(merging)}: these need the adapter merged "
            f"into the base weights, and {policy.reason}", field="formats")


def _validate(job: ExportJob, formats: Sequence[str], check: bool, load_tokenizer) -> list:
    """Every refusable input refused before any weight is read; the formats to write, deduplicated,
    in writing order."""
    from .gguf_writer import check_gguf_supported

    wanted = list(dict.fromkeys(formats))
    known = ", ".join(export_formats())
    if not wanted:
        raise TunewrightError(f"no export format asked for (known: {known})", field="formats")
    unknown = [f for f in wanted if f not in EXPORTERS]
    if unknown:
        raise TunewrightError(f"unknown export format '{unknown[0]}' (known: {known})", field="formats")
    exporters = sorted((EXPORTERS.get(f) for f in wanted), key=lambda e: (e.order, e.name))
    if job.gguf_dtype not in GGUF_DTYPES:
        raise TunewrightError(f"unknown GGUF dtype '{job.gguf_dtype}' (known: {', '.join(GGUF_DTYPES)})",
                              field="gguf_dtype")
    check_target(job.out_dir, job.name)
    merging = [e.name for e in exporters if e.merges]
    check_mergeable(job.adapter_path, merging)
    for exporter in exporters:
        if not exporter.needs_tokenizer:
            exporter.validate(job)
    job.base_config = _read_json(job.base.folder / "config.json")
    if any(e.uses_gguf for e in exporters):
        check_gguf_supported(job.base_config)
    if check and not merging:
        merged_formats = ", ".join(cls.name for cls in EXPORTERS.classes() if cls.merges)
        raise TunewrightError("the parity check compares the merged and GGUF exports; ask for one of "
                              f"{merged_formats} with it", field="check")
    job.tokenizer = load_tokenizer()
    for exporter in exporters:
        if exporter.needs_tokenizer:
            exporter.validate(job)
    return exporters


def export_adapter(base: BaseModelInfo, adapter_path: Path | None, out_dir: Path, *, name: str,
                   formats: Sequence[str] = ("merged", "gguf", "ollama", "vllm"), gguf_dtype: str = "f32",
                   check: bool = False, probes: Sequence[list[dict]] | None = None,
                   max_new_tokens: int = 32) -> ExportResult:
    """Write the asked formats into ``out_dir`` (which must be new or empty) and, if asked, check parity."""
    from transformers import AutoTokenizer

    started = time.perf_counter()
    out_dir = Path(out_dir)
    adapter_path = Path(adapter_path).resolve() if adapter_path is not None else None
    job = ExportJob(base=base, adapter_path=adapter_path, out_dir=out_dir, tmp=out_dir, name=name,
                    tokenizer=None, base_config={}, gguf_dtype=gguf_dtype)
    exporters = _validate(job, formats, check, load_tokenizer=lambda: AutoTokenizer.from_pretrained(base.folder, local_files_only=True))
    report: CheckReport | None = None

    with atomic_dir(out_dir) as tmp:
        job.tmp = tmp
        for exporter in exporters:
            exporter.write(job)
        job._model = None  # the merged weights are not needed past here
        if check:
            report = _run_check(base, adapter_path, tmp, job.files, job.gguf_name, gguf_dtype, probes, max_new_tokens)
            atomic_write_json(tmp / "check.json", report)
        atomic_write_json(tmp / "export.json", {
            "name": name, "base_ref": base.ref, "base_sha256": base.sha256,
            "adapter": str(adapter_path) if adapter_path else None, "formats": [e.name for e in exporters],
            "gguf_dtype": gguf_dtype, "files": {fmt: path.name for fmt, path in job.files.items()},
            "vllm_command": job.vllm_command, "check_passed": report["passed"] if report else None,
        })
    passed = report["passed"] if report is not None else True
    return ExportResult(out_dir=out_dir, files=job.files, check=report, passed=passed, vllm_command=job.vllm_command,
                        seconds=round(time.perf_counter() - started, 2), notes=job.notes)


def _run_check(base, adapter_path, tmp: Path, files: dict, gguf_name: str, gguf_dtype: str, probes,
               max_new_tokens: int) -> CheckReport:
    from .check import run_check

    return run_check(base, adapter_path,
                     merged_dir=tmp / "merged" if "merged" in files else None,
                     gguf_path=tmp / gguf_name if "gguf" in files else None,
                     gguf_dtype=gguf_dtype, probes=probes, max_new_tokens=max_new_tokens)
