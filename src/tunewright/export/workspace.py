"""`tunewright export` inside a workspace: resolve the model, probe with held-out questions, and
register the export only when its parity check passed."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import NotFoundError, TunewrightError
from ..io import sha256_file
from .api import ExportResult, export_adapter

DEFAULT_PROBES = 8


def probe_conversations(workspace, limit: int, retriever=None) -> list[list[dict]] | None:
    """The first held-out questions of the recipe's dataset (what the adapter was trained for);
    None, so the export uses its built-in generic probes, when no dataset is registered. With an
    open-book adapter's ``retriever``, each prompt as that adapter sees it."""
    from ..data.api import load_split

    try:
        _, rows = load_split(workspace, None, "eval")
    except NotFoundError:
        return None
    probes = []
    for row in rows[:limit]:
        probes.append(retriever.prompt_for(row) if retriever is not None
                      else row.prompt_messages)
    return probes or None


def _hashes(result: ExportResult) -> dict[str, str]:
    hashes = {}
    for fmt, path in result.files.items():
        if path.is_file():
            hashes[fmt] = sha256_file(path)
        elif path.is_dir():
            for weights in sorted(path.glob("*.safetensors")):
                hashes[f"{fmt}/{weights.name}"] = sha256_file(weights)
    return hashes


TEXT_FORMATS = ("merged", "gguf", "ollama", "vllm")


def export_for_workspace(workspace, model_ref: str, *, out_dir: Path | None = None,
                         formats: Sequence[str] | None = None, gguf_dtype: str = "f32",
                         check: bool = False, probes: int = DEFAULT_PROBES, max_new_tokens: int = 32):
    """Export ``model_ref`` (``base``, a registered adapter, or an adapter folder); returns the result
    and the export's registry record (None when its check failed: it is then not registered).
    ``formats`` None: every format the model has (a vision-language model: the merged folder)."""
    from ..models.adapters import resolve_ref
    from ..registry.deploy import DeploymentStore

    vision = workspace.recipe.train.vision is not None
    if vision:
        from .vision import FORMATS as VISION_FORMATS, check_formats

        formats = check_formats(VISION_FORMATS if formats is None else formats)  # before any model loads
    resolved = resolve_ref(model_ref, base_model=workspace.recipe.base_model, registry=workspace.registry,
                           vision=vision)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    safe_name = Path(model_ref).name if Path(model_ref).is_dir() else model_ref.replace("@", "-v")
    out_dir = Path(out_dir) if out_dir is not None else workspace.root / "exports" / f"{safe_name}-{stamp}"
    if probes < 1:
        raise TunewrightError("need at least one probe prompt", field="probes")
    if vision:
        result = _export_vision(workspace, resolved, out_dir, safe_name, formats, check, probes, max_new_tokens)
    else:
        asked = None
        if check:
            from ..retrieval.context import retriever_for

            # An open-book adapter is checked as it will answer: with its records, from sources the
            # index still matches (a stale index would prove answers no user gets).
            retriever = retriever_for(workspace, resolved.adapter_path, refuse_stale=True)
            asked = probe_conversations(workspace, probes, retriever)
        result = export_adapter(resolved.base, resolved.adapter_path, out_dir, name=safe_name,
                                formats=TEXT_FORMATS if formats is None else formats, gguf_dtype=gguf_dtype,
                                check=check, probes=asked, max_new_tokens=max_new_tokens)
    if not result.passed:
        return result, None
    record = DeploymentStore(workspace.registry).add_export(
        model_ref=model_ref, adapter_id=resolved.adapter_id, path=str(result.out_dir), formats=list(result.files),
        files={fmt: str(path) for fmt, path in result.files.items()}, check=result.check, files_sha256=_hashes(result))
    return result, record


def _export_vision(workspace, resolved, out_dir: Path, name: str, formats, check: bool, probes: int,
                   max_new_tokens: int):
    """The merged vision-language folder, checked on the dataset's first held-out rows with their images."""
    from ..data.api import load_split
    from ..data.vision import require_image_rows
    from .vision import export_vision

    rows, media = [], None
    if check:
        try:
            record, rows = load_split(workspace, None, "eval", text_only=False)
        except NotFoundError:
            rows = []
        else:
            rows = rows[:probes]
            media = Path(record.path)
            require_image_rows(rows, media / "eval.jsonl")
    return export_vision(resolved, out_dir, name=name, formats=formats, check=check, rows=rows, media=media,
                         max_new_tokens=max_new_tokens)
