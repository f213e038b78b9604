"""Admin routes: load, unload and combine adapters while the server keeps answering.

Every change runs on the engine's worker thread between batches, and is written to the audit log.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fastapi import APIRouter, Request

from ..errors import TunewrightError
from ..models.adapters import checked_adapter_folder
from ..registry.events import Event
from .pool import ServedModel
from .protocol import ApiError, CombineRequest, LoadRequest
from .server import ServeState, known_adapter_or_404

admin_router = APIRouter(prefix="/admin")


@dataclass(frozen=True)
class ServedAdapterChanged(Event):
    action: ClassVar[str] = "serve.adapter_changed"
    subject_kind: ClassVar[str] = "served_model"
    subject_field: ClassVar[str] = "name"
    name: str
    change: str  # loaded, unloaded, combined
    source: str
    adapter_id: int | None


def _describe(served: ServedModel) -> dict:
    return {"name": served.name, "peft_type": served.peft_type, "source": served.source,
            "adapter_id": served.adapter_id, "lane": "shared" if served.lane.shared else "own",
            "mixed_batches": served.lane.shared, **served.details}


def _state(request: Request) -> ServeState:
    return request.app.state.serve


async def _on_worker(state: ServeState, work):
    try:
        return await asyncio.wrap_future(state.engine.call(work))
    except TunewrightError as exc:
        raise ApiError(400, str(exc), param=exc.field) from None


def _inside_adapters(state: ServeState, relative: str) -> Path:
    """A folder under the workspace's adapters/; anything that escapes it (``..``, absolute paths,
    symlinks pointing out) is refused before the filesystem is read."""
    root = state.adapters_root
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ApiError(400, "path must be relative to the adapters folder, without '..'", param="path")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise ApiError(400, "path leaves the adapters folder", param="path")
    if not resolved.is_dir():
        raise ApiError(404, f"no adapter folder '{relative}' in the adapters folder", param="path")
    return resolved


def _audit(state: ServeState, served_name: str, change: str, source: str, adapter_id: int | None) -> None:
    state.workspace.registry.record(ServedAdapterChanged(name=served_name, change=change, source=source,
                                                         adapter_id=adapter_id))


@admin_router.get("/adapters")
async def list_adapters(request: Request):
    state = _state(request)
    return {"data": [_describe(m) for m in state.pool.models.values()]}


def _no_version_sign(name: str | None) -> None:
    # name@N means version N of a registered adapter; a folder or a combination must not pose as one.
    if name is not None and "@" in name:
        raise ApiError(400, f"'{name}': '@' is kept for registry versions (name@N); choose another name", param="name")


@admin_router.post("/adapters")
async def load_adapter(body: LoadRequest, request: Request):
    state = _state(request)
    if (body.adapter is None) == (body.path is None):
        raise ApiError(400, "give exactly one of 'adapter' (a registered name) or 'path'", param="adapter")
    _no_version_sign(body.name)
    if body.adapter is not None:
        record = known_adapter_or_404(state.workspace.registry, body.adapter)
        try:
            folder = checked_adapter_folder(record, state.pool.base)
        except TunewrightError as exc:
            raise ApiError(409, str(exc), param="adapter") from None
        adapter_id = record.id
        name = body.name or body.adapter
        source = f"registry {record.name}@{record.version}"
    else:
        folder, adapter_id = _inside_adapters(state, body.path), None
        name = body.name or folder.name
        source = str(folder)
    served = await _on_worker(state, lambda: state.pool.load(name, folder, adapter_id=adapter_id, source=source))
    await asyncio.to_thread(_audit, state, served.name, "loaded", source, adapter_id)
    return _describe(served)


@admin_router.delete("/adapters/{name}")
async def unload_adapter(name: str, request: Request):
    state = _state(request)
    if name not in state.pool.models:
        raise ApiError(404, f"model '{name}' is not loaded", param="name")
    served = state.pool.models[name]
    await _on_worker(state, lambda: state.pool.unload(name))
    await asyncio.to_thread(_audit, state, name, "unloaded", served.source, served.adapter_id)
    return {"name": name, "unloaded": True}


@admin_router.post("/combine")
async def combine(body: CombineRequest, request: Request):
    state = _state(request)
    _no_version_sign(body.name)
    weights = body.weights if body.weights is not None else [1.0 / len(body.adapters)] * len(body.adapters)
    served = await _on_worker(state, lambda: state.pool.combine(body.name, body.adapters, weights,
                                                                method=body.method, density=body.density))
    await asyncio.to_thread(_audit, state, served.name, "combined", served.source, None)
    return _describe(served)
