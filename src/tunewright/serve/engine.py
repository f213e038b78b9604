"""The generation engine: a bounded queue in front of one worker thread that decodes batches.

The worker takes the oldest waiting request, gathers others that can share its batch (same lane,
same sampling settings), and decodes them together with ``generate``. A per-row stopping
criterion streams each new piece of text to its client as it appears and retires rows that hit
their end-of-sequence token, a stop string, their token budget, their deadline, or whose client
went away. Admin work (load, unload, combine) runs on the same thread between batches, so the
model never changes under a running batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .pool import AdapterPool, ServedModel

log = logging.getLogger(__name__)


class QueueFull(Exception):
    pass


class Draining(Exception):
    pass


class Sink(Protocol):
    def emit(self, text: str) -> None: ...
    def finish(self, result: "Completion") -> None: ...
    def fail(self, status: int, message: str) -> None: ...


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # stop, length, timeout, cancelled
    prompt_tokens: int
    completion_tokens: int
    served: str
    seconds: float


@dataclass(eq=False)
class GenRequest:
    request_id: str
    target: ServedModel
    prompt_ids: list[int]
    max_new_tokens: int
    sink: Sink
    deadline: float
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # benchmarks: every row runs to its token budget, as in vLLM
    # A vision-language prompt's image tensors (and per-token marks), as its processor made them for
    # ``prompt_ids``. Each family lays these out its own way, so such a request is decoded alone.
    inputs: dict | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def batch_key(self) -> tuple:
        lane = self.target.lane
        # Seeded sampling is only reproducible alone: its random stream must not be shared.
        alone = id(self) if self.seed is not None or self.inputs is not None else None
        sampling = (round(self.temperature, 6), round(self.top_p, 6)) if self.temperature > 0 else ("greedy",)
        return (id(lane), sampling, alone, self.ignore_eos)


class _Row:
    """Decoding state of one request inside a batch."""

    def __init__(self, request: GenRequest, tokenizer, eos_ids: set[int]) -> None:
        self.request, self.tokenizer, self.eos_ids = request, tokenizer, eos_ids
        self.tokens: list[int] = []
        self.sent = 0  # characters of the decoded text already emitted
        self.text = ""
        self.finish_reason: str | None = None

    def step(self, token: int) -> None:
        request = self.request
        if request.cancelled.is_set():
            self.finish_reason = "cancelled"
            return
        if token in self.eos_ids and not request.ignore_eos:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        hold = 0
        if text.endswith("\ufffd"):  # half a multi-byte character: wait for the rest
            hold = 1
        for stop in request.stop:
            at = text.find(stop, max(0, self.sent - len(stop)))
            if at != -1:
                self.text = text[:at]
                self._emit()
                self.finish_reason = "stop"
                return
            # Hold back a tail that could still grow into a stop string.
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if stop.startswith(text[-size:]):
                    hold = max(hold, size)
                    break
        self.text = text
        self._emit(hold)
        if len(self.tokens) >= request.max_new_tokens:
            self.finish_reason = "length"
        elif time.monotonic() > request.deadline:
            self.finish_reason = "timeout"

    def _emit(self, hold: int = 0) -> None:
        upto = len(self.text) - hold
        if upto > self.sent:
            self.request.sink.emit(self.text[self.sent:upto])
            self.sent = upto

    def close(self) -> None:
        if self.finish_reason in ("stop", "length", None):
            self._emit()


class _BatchMonitor(StoppingCriteria):
    """Called by ``generate`` after every step with the new tokens appended."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        done = []
        for row, token in zip(self.rows, last):
            if row.finish_reason is None:
                row.step(token)
            done.append(row.finish_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Engine:
    def __init__(self, pool: AdapterPool, tokenizer, *, max_batch_size: int = 8, batch_wait_ms: int = 5,
                 max_queue: int = 64, on_batch: Callable[[dict], None] | None = None,
                 on_finish: Callable[[GenRequest, Completion], None] | None = None) -> None:
        self.pool, self.tokenizer = pool, tokenizer
        self.max_batch_size, self.batch_wait = max_batch_size, batch_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch, self.on_finish = on_batch, on_finish
        self.eos_ids = self._eos_ids(pool, tokenizer)
        self._pending: deque[GenRequest] = deque()
        self._control: deque[tuple[Callable[[], object], Future]] = deque()
        self._cond = threading.Condition()
        self._running = 0  # requests inside the batch being decoded
        self._last_batch_size = 0
        self._stopping = False
        self._draining = False
        self._thread: threading.Thread | None = None
        self.recent: deque[tuple[str, str, int]] = deque(maxlen=256)  # (request id, finish reason, tokens)

    @staticmethod
    def _eos_ids(pool: AdapterPool, tokenizer) -> set[int]:
        from ..models.stops import stop_token_ids

        return set(stop_token_ids(tokenizer, getattr(pool.shared.model, "generation_config", None)))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tunewright-engine", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """Refuse new requests; those already queued or running still finish."""
        with self._cond:
            self._draining = True

    def stop(self, timeout: float | None = None) -> None:
        with self._cond:
            self._draining = self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._pending) + self._running

    # -- intake (any thread) -------------------------------------------------------------------

    def submit(self, request: GenRequest) -> None:
        with self._cond:
            if self._draining:
                raise Draining()
            if len(self._pending) >= self.max_queue:
                raise QueueFull()
            self._pending.append(request)
            self._cond.notify_all()

    def call(self, work: Callable[[], object]) -> Future:
        """Run ``work`` on the worker thread between batches (model changes)."""
        future: Future = Future()
        with self._cond:
            self._control.append((work, future))
            self._cond.notify_all()
        return future

    # -- the worker ----------------------------------------------------------------------------

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not (self._pending or self._control or self._stopping):
                    self._cond.wait()
                if self._stopping and not self._pending and not self._control:
                    return
            self._run_control()
            batch = self._take_batch()
            if batch:
                self._decode(batch)

    def _run_control(self) -> None:
        while True:
            with self._cond:
                if not self._control:
                    return
                work, future = self._control.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:  # handed to the caller, who turns it into an HTTP answer
                    future.set_exception(exc)

    def _take_batch(self) -> list[GenRequest]:
        with self._cond:
            if not self._pending:
                return []
            # Clients whose answers just went out usually send their next request within
            # milliseconds; waiting briefly for them keeps batches full instead of settling into two
            # half-size batches that take turns. A lone client is never made to wait.
            expected = min(self.max_batch_size, len(self._pending) + self._last_batch_size)
            if self.batch_wait and len(self._pending) < expected and not self._stopping:
                self._cond.wait_for(lambda: len(self._pending) >= expected or self._control or self._stopping,
                                    timeout=self.batch_wait)
            key = self._pending[0].batch_key
            batch, keep = [], deque()
            while self._pending:
                request = self._pending.popleft()
                if request.batch_key == key and len(batch) < self.max_batch_size:
                    batch.append(request)
                else:
                    keep.append(request)
            self._pending = keep
            self._running = len(batch)
        live = []
        now = time.monotonic()
        for request in batch:
            if request.cancelled.is_set():
                self._finish(request, "", "cancelled", 0)
            elif now > request.deadline:
                request.sink.fail(504, "request timed out while queued")
            elif not self.pool.is_current(request.target):
                request.sink.fail(404, f"model '{request.target.name}' was unloaded")
            else:
                live.append(request)
        return live

    def _finish(self, request: GenRequest, text: str, reason: str, n_tokens: int) -> None:
        completion = Completion(text=text, finish_reason=reason, prompt_tokens=len(request.prompt_ids),
                                completion_tokens=n_tokens, served=request.target.name,
                                seconds=time.monotonic() - request.enqueued_at)
        self.recent.append((request.request_id, reason, n_tokens))
        if self.on_finish:
            self.on_finish(request, completion)
        request.sink.finish(completion)

    def _decode(self, batch: list[GenRequest]) -> None:
        started = time.monotonic()
        rows = [_Row(request, self.tokenizer, self.eos_ids) for request in batch]
        try:
            self._generate(batch, rows)
        except Exception:  # one bad batch must not take the server down with it
            log.exception("generation failed for %s", ", ".join(r.request_id for r in batch))
            # The exception text stays in the log: it can hold paths, library internals or other rows' data.
            for row in rows:
                if row.finish_reason is None:
                    row.request.sink.fail(500, f"generation failed (request id {row.request.request_id}); "
                                               "the details are in the server's log")
                    row.finish_reason = "error"
        generated = 0
        for row in rows:
            if row.finish_reason == "error":
                continue
            row.close()
            generated += len(row.tokens)
            self._finish(row.request, row.text, row.finish_reason or "length", len(row.tokens))
        with self._cond:
            self._running = 0
            self._last_batch_size = len(batch)
        if self.on_batch:
            self.on_batch({"size": len(batch), "tokens": generated, "seconds": time.monotonic() - started,
                           "lane": batch[0].target.lane.name})

    def _generate(self, batch: list[GenRequest], rows: list[_Row]) -> None:
        first = batch[0]
        lane = first.target.lane
        pad = self.tokenizer.pad_token_id
        width = max(len(r.prompt_ids) for r in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, request in enumerate(batch):  # left padding: every row continues from the right edge
            n = len(request.prompt_ids)
            input_ids[i, width - n:] = torch.tensor(request.prompt_ids)
            attention[i, width - n:] = 1
        kwargs = dict(first.inputs or {})  # a request with images is alone in its batch
        sampling = first.temperature > 0
        if sampling:
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p, top_k=None)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with self.pool.batch_mode(lane, [r.target.batch_name for r in batch]) as adapter_names:
            if adapter_names is not None:
                kwargs["adapter_names"] = adapter_names
            lane.model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=max(r.max_new_tokens for r in batch),
                stopping_criteria=StoppingCriteriaList([_BatchMonitor(rows)]),
                eos_token_id=None if first.ignore_eos else sorted(self.eos_ids),
                pad_token_id=pad, **kwargs)
