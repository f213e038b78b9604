"""Apply one of your edits to every similar pending row: a preview page first, then one POST that
makes exactly the previewed changes (refused if any row changed in between)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from ...errors import TunewrightError
from ..corrections import PreviewRow, apply_correction, preview_correction
from .auth import check_csrf, current_reviewer, flash, payload, render
from .queue import _item, _require_queue, _store, qpath

router = APIRouter()


def _embedder(request: Request):
    if request.app.state.embedder is None:  # the sentence model loads on first use, not at start-up
        from ...models.embeddings import default_embedder

        request.app.state.embedder = default_embedder()
    return request.app.state.embedder


def _own_edit(request: Request, item_id: int, me: str) -> None:
    edited = [r for r in _store(request).reviews(candidate_id=item_id, reviewer=me) if r.edited]
    if not edited:
        raise TunewrightError(f"you have not edited item {item_id}; edit it first, then apply the edit elsewhere")


def _preview(request: Request, item_id: int, min_similarity: float) -> list[PreviewRow]:
    return preview_correction(_store(request), item_id, embedder=_embedder(request), min_similarity=min_similarity)


@router.get("/q/{queue}/items/{item_id}/correct")
def correction_preview(request: Request, queue: str, item_id: int, min_similarity: float = 0.6,
                       me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    item = _item(request, queue, item_id)
    _own_edit(request, item_id, me)
    rows = _preview(request, item_id, min_similarity)
    return render(request, "correct.html", queue=queue, item=item, rows=rows, min_similarity=min_similarity,
                  apply_url=qpath(queue, "items", item_id, "correct"))


@router.post("/q/{queue}/items/{item_id}/correct", dependencies=[Depends(check_csrf)])
def correction_apply(request: Request, queue: str, item_id: int, data=Depends(payload),
                     me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    _item(request, queue, item_id)
    _own_edit(request, item_id, me)
    try:
        min_similarity = float(data.get("min_similarity", 0.6))
        chosen = {int(v) for v in (data.getlist("ids") if hasattr(data, "getlist") else data.get("ids", []))}
    except (TypeError, ValueError):
        raise TunewrightError("min_similarity must be a number and ids whole numbers") from None
    rows = [row for row in _preview(request, item_id, min_similarity) if row.candidate_id in chosen]
    if len(rows) != len(chosen):
        raise TunewrightError("some selected rows are no longer similar or pending; preview again")
    n = apply_correction(_store(request), item_id, rows, reviewer=me)
    flash(request, f"Applied your correction to {n} similar rows; they are still pending review.")
    return RedirectResponse(qpath(queue), status_code=303)
