"""One queue's pages: the filtered list, bulk decisions, and reviewing item by item.

Each decision is one POST that returns only after the store committed it, so a crash or a closed
tab loses nothing. A reviewer sees only their own decisions (blind multi-review) and decides only
items in their own to-do list, or revises their own earlier decisions.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ...errors import NotFoundError, TunewrightError
from ..records import CANDIDATE_STATUSES, DECISIONS, CandidateRecord
from ..store import QueueFilter, ReviewStore
from . import views
from .auth import check_csrf, current_reviewer, flash, payload, render, wants_json

router = APIRouter()
PAGE_SIZE = 100
PAST = {"accept": "accepted", "reject": "rejected"}


def qpath(queue: str, *parts: Any) -> str:
    return "/".join([f"/q/{quote(queue, safe='')}", *(str(p) for p in parts)])


def _store(request: Request) -> ReviewStore:
    return request.app.state.store


def _require_queue(request: Request, queue: str) -> None:
    known = _store(request).queues()
    if queue not in known and queue != request.app.state.queue_default:
        raise NotFoundError(f"queue '{queue}' not found (known: {', '.join(known) or 'none'})")


def _item(request: Request, queue: str, item_id: int) -> CandidateRecord:
    item = _store(request).get(item_id)
    if item.queue != queue:  # ids are global; an id from another queue is not in this one
        raise NotFoundError(f"review item {item_id} not found in queue '{queue}'")
    return item


@router.get("/q/{queue}")
def queue_page(request: Request, queue: str, page: int = 1, me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    store = _store(request)
    where, params = views.parse_filter(request.query_params)
    items = store.candidates(queue, where)
    todo = {c.id for c in store.todo(queue, me, where)}
    mine = views.own_latest(store.reviews(queue, reviewer=me))
    pages = max(1, -(-len(items) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    return render(request, "queue.html", queue=queue, params=params, statuses=CANDIDATE_STATUSES,
                  facets=store.facets(queue), progress=store.progress(queue, me), n_todo=len(todo),
                  items=items[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], n_items=len(items), todo=todo,
                  mine=mine, page=page, pages=pages, excerpt=views.excerpt)


@router.get("/q/{queue}/bulk")
def bulk_confirm(request: Request, queue: str, decision: str = "accept",
                 me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    if decision not in DECISIONS:
        raise TunewrightError(f"unknown decision '{decision}' (use accept or reject)", field="decision")
    where, params = views.parse_filter(request.query_params)
    n = len(_store(request).todo(queue, me, where))
    return render(request, "bulk.html", queue=queue, params=params, decision=decision, n=n, changed=False)


@router.post("/q/{queue}/bulk", dependencies=[Depends(check_csrf)])
def bulk(request: Request, queue: str, form=Depends(payload), me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    store, spec = _store(request), request.app.state.spec
    decision = str(form.get("decision") or "")
    if decision not in DECISIONS:
        raise TunewrightError(f"unknown decision '{decision}' (use accept or reject)", field="decision")
    where, params = views.parse_filter(form)
    reasons = form.getlist("reasons") if hasattr(form, "getlist") else list(form.get("reasons") or [])
    checked = views.parse_decision({"decision": decision, "reasons": reasons, "note": form.get("note")}, [],
                                   spec.reject_reasons)
    # Only the reviewer's own to-do items: the store's bulk call alone would also take items
    # assigned to other reviewers.
    ids = [c.id for c in store.todo(queue, me, where)]
    if str(len(ids)) != str(form.get("expected")):
        return render(request, "bulk.html", status_code=409, queue=queue, params=params, decision=decision,
                      n=len(ids), changed=True)
    n = store.bulk_review(queue, QueueFilter(ids=ids), reviewer=me, decision=decision, min_reviews=spec.min_reviews,
                          reasons=checked["reasons"], note=checked["note"])
    flash(request, f"{PAST[decision].capitalize()} {n} item{'s' if n != 1 else ''}.")
    return RedirectResponse(qpath(queue) + views.query(params), status_code=303)


@router.get("/q/{queue}/review")
def review_next(request: Request, queue: str, after: int = 0, me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    store = _store(request)
    where, params = views.parse_filter(request.query_params)
    todo = store.todo(queue, me, where)
    if not todo:
        done = views.history(store.reviews(queue, reviewer=me))
        prev_url = qpath(queue, "items", done[-1]) + views.query(params) if done else None
        return render(request, "done.html", queue=queue, params=params, progress=store.progress(queue, me),
                      n_todo=0, prev_url=prev_url)
    # `after` skips forward without deciding; past the end it wraps round to the first.
    item = next((c for c in todo if c.id > after), todo[0])
    return _item_page(request, queue, item, me, params, in_todo=True, todo=todo)


@router.get("/q/{queue}/items/{item_id}")
def item_page(request: Request, queue: str, item_id: int, me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    item = _item(request, queue, item_id)
    where, params = views.parse_filter(request.query_params)
    store = _store(request)
    return _item_page(request, queue, item, me, params, in_todo=_in_todo(store, queue, me, item_id),
                      todo=store.todo(queue, me, where))


def _item_page(request: Request, queue: str, item: CandidateRecord, me: str, params: dict[str, str], *,
               in_todo: bool, todo: list[CandidateRecord]) -> Response:
    store = _store(request)
    reviews = store.reviews(queue, reviewer=me)
    view = views.item_view(item, views.own_latest(reviews).get(item.id), in_todo)
    done = views.history(reviews)
    q = views.query(params)
    review_url = qpath(queue, "review") + q
    if item.id in done:
        i = done.index(item.id)
        prev_url = qpath(queue, "items", done[i - 1]) + q if i > 0 else None
        next_url = qpath(queue, "items", done[i + 1]) + q if i + 1 < len(done) else review_url
    else:
        prev_url = qpath(queue, "items", done[-1]) + q if done else None
        later = [c for c in todo if c.id != item.id]
        next_url = qpath(queue, "review") + views.query(params, after=item.id) if later else None
    return render(request, "item.html", queue=queue, params=params, view=view, item=item,
                  judge=views.judge_info(item), chunk=views.source_chunk(item), extra=views.provenance_extra(item),
                  progress=store.progress(queue, me), n_todo=len(todo), prev_url=prev_url, next_url=next_url,
                  decision_url=qpath(queue, "items", item.id, "decision") + q,
                  preview_url=qpath(queue, "items", item.id, "preview"))


def _in_todo(store: ReviewStore, queue: str, me: str, item_id: int) -> bool:
    """Whether the item is on the reviewer's own to-do list, whatever the page's filters say."""
    return bool(store.todo(queue, me, QueueFilter(ids=[item_id])))


@router.post("/q/{queue}/items/{item_id}/decision", dependencies=[Depends(check_csrf)])
def decide(request: Request, queue: str, item_id: int, data=Depends(payload),
           me: str = Depends(current_reviewer)) -> Response:
    _require_queue(request, queue)
    store, spec = _store(request), request.app.state.spec
    item = _item(request, queue, item_id)
    mine = views.own_latest(store.reviews(queue, reviewer=me)).get(item_id)
    view = views.item_view(item, mine, _in_todo(store, queue, me, item_id))
    if not view.can_decide:
        return _refuse(request, 403, f"you cannot decide item {item_id}: {view.why_not}")
    fields = _decision_fields(data, len(view.base))
    review = store.review(item_id, reviewer=me, min_reviews=spec.min_reviews,
                          **views.parse_decision(fields, view.base, spec.reject_reasons))
    _, params = views.parse_filter(request.query_params)
    next_url = qpath(queue, "review") + views.query(params)
    flash(request, f"{PAST[review.decision].capitalize()} item {item_id}{' with your edit' if review.edited else ''}"
                   ". Press k to go back to it.")
    if wants_json(request):
        return JSONResponse({"ok": True, "review_id": review.id, "decision": review.decision,
                             "edited": review.edited, "next": next_url})
    return RedirectResponse(next_url, status_code=303)


def _decision_fields(data: Any, n_turns: int) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    # A plain form (no JavaScript): reasons repeat, turns come as turn-0, turn-1, ...
    turns = [data.get(f"turn-{i}") for i in range(n_turns)]
    return {**{k: data.get(k) for k in ("decision", "rating", "note", "seconds")},
            "reasons": data.getlist("reasons"), "turns": None if all(t is None for t in turns) else turns}


def _refuse(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", status_code=status, status=status, title="Not allowed", message=message)


@router.post("/q/{queue}/items/{item_id}/preview", dependencies=[Depends(check_csrf)])
def preview(request: Request, queue: str, item_id: int, data=Depends(payload),
            me: str = Depends(current_reviewer)) -> Response:
    """The word diff of an edit in progress; nothing is stored."""
    _require_queue(request, queue)
    item = _item(request, queue, item_id)
    mine = views.own_latest(_store(request).reviews(queue, reviewer=me)).get(item_id)
    base = views.item_view(item, mine, False).base
    turns = data.get("turns") if isinstance(data, dict) else None
    if not isinstance(turns, list) or len(turns) != len(base):
        raise TunewrightError(f"the edit must keep the item's {len(base)} turns", field="turns")
    diffs = views.turn_diffs(base, [str(t).replace("\r\n", "\n") for t in turns])
    return JSONResponse({"diffs": [None if d is None else str(d) for d in diffs],
                         "empty": [i for i, t in enumerate(turns) if not str(t).strip()]})
