"""What alignment read from each image and recording of a dataset, beside the file itself, and a
reviewer's correction of it.

The page is per aligned dataset version (``tunewright data align`` made it): each media file of the
version it was aligned from, shown (image) or played (audio) next to the text the engine read, with
the engine and settings recorded in the aligned version's spec. A saved correction goes into the
workspace's correction store (``align.CorrectionStore``, keyed by the file's sha256 and the engine);
the next ``data align`` uses it instead of the engine's text, so the correction is what trains.
Saving the engine's own text back removes a correction.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from ...align.cache import align as engine_reading
from ...align.corrections import CorrectionStore
from ...data.media import media_in_version
from ...errors import NotFoundError, TunewrightError
from .auth import check_csrf, current_reviewer, flash, payload, render

router = APIRouter()
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
               "wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}
MAX_CORRECTION_CHARS = 20_000


def _cache(request: Request) -> Path:
    cache = request.app.state.align_cache
    if cache is None:
        raise NotFoundError("this review UI was started without a workspace's alignment cache")
    return cache


def _aligned(request: Request, dataset: str, version: str):
    """The aligned version and the version its media came from."""
    registry = request.app.state.registry
    record = registry.get_dataset(dataset, version)
    spec = record.spec or {}
    if spec.get("kind") != "align":
        raise TunewrightError(f"dataset '{dataset}@{version}' was not made by `tunewright data align`; its media "
                              "have no aligned text to review")
    source = registry.get_dataset(spec["source"]["dataset"], spec["source"]["version"])
    return record, source, spec


def _files(request: Request, dataset: str, version: str):
    record, source, spec = _aligned(request, dataset, version)
    engines = {kind: (p["engine"], p["settings"]) for kind, p in spec["engines"].items()}
    store = CorrectionStore(_cache(request))
    files = []
    for ref, media in media_in_version(source.path).items():
        engine, settings = engines[media.modality]
        path = Path(source.path) / ref
        correction = store.get(media.sha256, engine)
        files.append({"ref": ref, "sha256": media.sha256, "modality": media.modality, "engine": engine,
                      "url": f"/media/{dataset}/{version}/files/{Path(ref).name}",
                      "read": engine_reading(path, engine, _cache(request), settings).text,
                      "correction": correction})
    return record, source, files


@router.get("/media")
def media_index(request: Request, me: str = Depends(current_reviewer)) -> Response:
    aligned = [d for d in request.app.state.registry.list_datasets() if (d.spec or {}).get("kind") == "align"]
    return render(request, "media_index.html", datasets=aligned)


@router.get("/media/{dataset}/{version}")
def media_page(request: Request, dataset: str, version: str, me: str = Depends(current_reviewer)) -> Response:
    record, source, files = _files(request, dataset, version)
    return render(request, "media.html", dataset=record, source=source, files=files,
                  action=f"/media/{dataset}/{version}")


@router.get("/media/{dataset}/{version}/files/{name}")
def media_file(request: Request, dataset: str, version: str, name: str,
               me: str = Depends(current_reviewer)) -> Response:
    _, source, _ = _aligned(request, dataset, version)
    # Only a file the version's manifest lists: the name never reaches the file system unchecked.
    media = media_in_version(source.path).get(f"media/{name}")
    if media is None:
        raise NotFoundError(f"no media file '{name}' in dataset '{source.name}@{source.version}'")
    return FileResponse(Path(source.path) / "media" / name, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]])


@router.post("/media/{dataset}/{version}", dependencies=[Depends(check_csrf)])
def save_correction(request: Request, dataset: str, version: str, data=Depends(payload),
                    me: str = Depends(current_reviewer)) -> Response:
    _, source, files = _files(request, dataset, version)
    by_sha = {f["sha256"]: f for f in files}
    chosen = by_sha.get(str(data.get("sha256", "")))
    if chosen is None:
        raise TunewrightError("sha256 names no media file of this dataset", field="sha256")
    text = str(data.get("text", "")).strip()
    if not text or len(text) > MAX_CORRECTION_CHARS:
        raise TunewrightError(f"the corrected text must hold 1 to {MAX_CORRECTION_CHARS} characters", field="text")
    store = CorrectionStore(_cache(request))
    if text == chosen["read"].strip():
        store.remove(chosen["sha256"], chosen["engine"])
        flash(request, f"{chosen['ref']}: back to the engine's text.")
    else:
        store.set(chosen["sha256"], chosen["engine"], text, by=me)
        flash(request, f"{chosen['ref']}: correction saved. Run `tunewright data align {source.name}@{source.version}` "
                       "to register a version that trains on it.")
    return RedirectResponse(f"/media/{dataset}/{version}#m-{chosen['sha256'][:12]}", status_code=303)
