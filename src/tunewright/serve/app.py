"""The OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions, /v1/models, plus
feedback, /metrics and the admin routes (serve/admin.py)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import TunewrightError
from ..models.chat import render
from .engine import Completion, Draining, GenRequest, QueueFull
from ..webguard import BodyLimit
from .guards import HostAllowlist, InternalErrors, openai_error
from .monitoring import feedback_candidate, scrub
from .media import as_logged, as_text, decode_parts, vision_inputs
from .speech import speak, wants_audio
from .protocol import ApiError, ChatRequest, CompletionRequest, FeedbackRequest, checked_messages, validation_message
from .server import ServeState

_DONE = object()


class AsyncSink:
    """Carries a request's text pieces from the worker thread to the asyncio handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.queue = loop, asyncio.Queue()
        self.first_token_at: float | None = None

    def _put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def emit(self, text: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self._put(("text", text))

    def finish(self, result: Completion) -> None:
        self._put(("done", result))

    def fail(self, status: int, message: str) -> None:
        self._put(("error", ApiError(status, message, type="server_error" if status >= 500 else "invalid_request_error")))


def _check_key(request: Request, keys: frozenset[str]) -> None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    # Starlette decodes header bytes as latin-1, so this recovers the bytes the client sent: a UTF-8
    # key can match, and comparing bytes never raises on non-ASCII text the way comparing str does.
    sent = token.encode("latin-1")
    if not any(hmac.compare_digest(sent, key.encode("utf-8")) for key in keys):
        raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)", type="authentication_error",
                       code="invalid_api_key")


def state_of(request: Request) -> ServeState:
    return request.app.state.serve


def require_inference_key(request: Request) -> None:
    state = state_of(request)
    if state.inference_keys:
        _check_key(request, state.inference_keys | state.admin_keys)


def require_admin_key(request: Request) -> None:
    state = state_of(request)
    if not state.admin_keys:
        raise ApiError(403, f"the admin API is off: set {state.spec.admin_keys_env} to enable it",
                       type="permission_error")
    _check_key(request, state.admin_keys)


def create_app(state: ServeState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.engine.start()
        try:
            yield
        finally:
            # Uvicorn has stopped taking connections and waited for open ones; finish what is queued.
            state.engine.stop(timeout=state.spec.request_timeout_s)

    app = FastAPI(title="Tunewright", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = validation_message(list(exc.errors()))
        return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(TunewrightError)
    async def _user_error(request: Request, exc: TunewrightError):
        return JSONResponse(ApiError(400, str(exc), param=exc.field).body(), status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue_depth": state.engine.queue_depth, "models": sorted(state.pool.models)}

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=[Depends(require_inference_key)])
    async def models():
        created = int(state.started_at)
        data = [{"id": name, "object": "model", "created": created, "owned_by": "tunewright"}
                for name in state.public_names()]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", dependencies=[Depends(require_inference_key)])
    async def chat(body: ChatRequest, request: Request):
        # Off the event loop: decoding and checking an image or a clip takes a while.
        spoken = wants_audio(body.modalities, body.audio, stream=body.stream)
        raw, media = await asyncio.to_thread(decode_parts, body.messages, state.workspace.recipe.data.media)
        messages = checked_messages(raw)
        if messages[-1]["role"] == "assistant":
            raise ApiError(400, "the last message must not be the assistant's", param="messages")
        return await _serve(state, request, body, None, {"messages": messages}, chat=True, messages=messages,
                            media=media, spoken=spoken)

    @app.post("/v1/completions", dependencies=[Depends(require_inference_key)])
    async def completions(body: CompletionRequest, request: Request):
        return await _serve(state, request, body, body.prompt, {"prompt": body.prompt}, chat=False)

    @app.post("/v1/feedback", dependencies=[Depends(require_inference_key)])
    async def feedback(body: FeedbackRequest):
        from ..review.feedback import add_feedback

        record = state.recent.get(body.request_id)
        if record is None:
            raise ApiError(404, f"no recent response with id '{body.request_id}'", param="request_id")

        def store() -> tuple[int, int | None]:
            # The feedback table keeps the texts as given: redact them before they get there.
            clean = scrub if state.spec.redact_pii else (lambda text: text)
            correction = clean(body.correction) if body.correction else body.correction
            comment = clean(body.comment) if body.comment else body.comment
            candidate = None
            if body.rating == "down":
                candidate = feedback_candidate(record, correction=correction, rating=body.rating,
                                               request_id=body.request_id, redact_pii=state.spec.redact_pii)
            return add_feedback(state.workspace.registry, request_id=body.request_id, model=record["model"],
                                rating=body.rating, correction=correction, comment=comment, candidate=candidate,
                                queue=state.spec.feedback_queue)
        feedback_id, candidate_id = await asyncio.to_thread(store)
        return {"id": feedback_id, "review_candidate_id": candidate_id,
                "queue": state.spec.feedback_queue if candidate_id else None}

    from .admin import admin_router

    app.include_router(admin_router, dependencies=[Depends(require_admin_key)])
    # Inside FastAPI's own error middleware, which would otherwise answer a plain-text 500.
    app.add_middleware(InternalErrors)
    # Host is checked first: a refused page should not even get its body read.
    return HostAllowlist(BodyLimit(app, state.spec.max_request_bytes, render=openai_error), allowed=state.spec.allowed_hosts,
                         bound_host=state.spec.host, port=state.spec.port)


def _encode(state: ServeState, served, prompt: str | None, messages: list[dict] | None,
            media: dict[str, bytes]) -> tuple[list[int], dict | None]:
    """The prompt's token ids, and a vision-language prompt's image tensors (None for text)."""
    if messages is not None:
        # Rendered once the serving adapter is known: an open-book adapter gets its records first.
        messages = state.with_records(served, messages)
        if state.processor is not None:
            return vision_inputs(state.processor, messages, media)
        prompt = render(state.tokenizer, messages)
    return state.tokenizer(prompt, add_special_tokens=False)["input_ids"], None


def _remember(state: ServeState, request_id: str, record: dict) -> None:
    # Redaction of a long prompt takes a while; this runs on a thread, not the event loop.
    state.recent.add(request_id, record)
    state.request_log.write(record)


def _budget(state: ServeState, body, prompt_tokens: int, virtual_tokens: int) -> int:
    room = state.context_length - prompt_tokens - virtual_tokens
    if room < 1:
        raise ApiError(400, f"this model's maximum context length is {state.context_length} tokens; the prompt has "
                            f"{prompt_tokens + virtual_tokens}", param="messages", code="context_length_exceeded")
    asked = body.token_budget()
    if asked is None:
        return min(state.spec.default_max_tokens, room)
    if asked > state.spec.max_tokens_limit:
        raise ApiError(400, f"max_tokens {asked} is over this server's limit of {state.spec.max_tokens_limit}",
                       param="max_tokens")
    if asked > room:
        raise ApiError(400, f"this model's maximum context length is {state.context_length} tokens; the prompt has "
                            f"{prompt_tokens + virtual_tokens} and max_tokens asks for {asked}",
                       param="max_tokens", code="context_length_exceeded")
    return asked


async def _serve(state: ServeState, request: Request, body, prompt: str | None, logged: dict[str, Any], *, chat: bool,
                 messages: list[dict] | None = None, media: dict[str, bytes] | None = None,
                 spoken: dict[str, str] | None = None):
    arrived = time.monotonic()
    served = await state.resolve(body.model, body.user)
    if messages is not None and state.processor is None:
        # Image and audio parts read as the adapter was trained to read them (OCR, transcription),
        # off the event loop; the log keeps that text, what the model saw, not the request's base64.
        messages = await asyncio.to_thread(as_text, messages, media or {}, served.folder, served.name)
        logged = {**logged, "messages": messages}
    elif messages is not None:
        logged = {**logged, "messages": as_logged(messages)}
    # Off the event loop: a prompt near the body limit takes long enough to tokenise to stall every
    # other client, stream and health check meanwhile; images take a while to preprocess too.
    prompt_ids, inputs = await asyncio.to_thread(_encode, state, served, prompt, messages, media or {})
    max_new = _budget(state, body, len(prompt_ids), served.lane.virtual_tokens)
    request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    sink = AsyncSink(asyncio.get_running_loop())
    job = GenRequest(request_id=request_id, target=served, prompt_ids=prompt_ids, max_new_tokens=max_new, sink=sink,
                     deadline=arrived + state.spec.request_timeout_s, temperature=body.temperature, top_p=body.top_p,
                     seed=body.seed, stop=body.stop, ignore_eos=body.ignore_eos, inputs=inputs)
    try:
        state.engine.submit(job)
    except QueueFull:
        state.metrics.observe_request(body.model, 429, time.monotonic() - arrived)
        raise ApiError(429, f"server busy: {state.spec.max_queue} requests already waiting", type="rate_limit_error",
                       headers={"Retry-After": "1"}) from None
    except Draining:
        raise ApiError(503, "server is shutting down", type="server_error") from None
    headers = {"x-request-id": request_id, "x-tunewright-served": served.name}
    created = int(time.time())

    async def finished(result: Completion, status: int) -> None:
        state.metrics.observe_request(body.model, status, time.monotonic() - arrived, result.prompt_tokens,
                                      result.completion_tokens)
        if sink.first_token_at is not None:
            state.metrics.first_token.labels(body.model).observe(sink.first_token_at - arrived)
        record = {"request_id": request_id, "model": body.model, "served": served.name,
                  "endpoint": "chat" if chat else "completions", **logged, "response": result.text,
                  "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                  "latency_s": round(time.monotonic() - arrived, 4), "finish_reason": result.finish_reason}
        await asyncio.to_thread(_remember, state, request_id, record)

    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        stream = _sse(job, sink, chat=chat, created=created, include_usage=include_usage,
                      finished=finished, model_name=body.model)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    result = await _wait(state, request, job, sink)
    status = 504 if result.finish_reason == "timeout" else 200
    await finished(result, status)
    if status == 504:
        raise ApiError(504, f"generation timed out after {state.spec.request_timeout_s:g} s", type="server_error")
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens}
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": result.text}
        if spoken is not None:
            # OpenAI's shape for a spoken answer: the words live in audio.transcript, content is null.
            wav = await asyncio.to_thread(speak, result.text, spoken["voice"])
            message = {"role": "assistant", "content": None, "audio": {
                "id": "audio_" + uuid.uuid4().hex, "data": base64.b64encode(wav).decode("ascii"),
                "expires_at": created + 3600, "transcript": result.text}}
        choice = {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
        payload = {"id": request_id, "object": "chat.completion", "created": created, "model": body.model,
                   "choices": [choice], "usage": usage}
    else:
        choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
        payload = {"id": request_id, "object": "text_completion", "created": created, "model": body.model,
                   "choices": [choice], "usage": usage}
    return JSONResponse(payload, headers=headers)


async def _wait(state: ServeState, request: Request, job: GenRequest, sink: AsyncSink) -> Completion:
    """The final result; a client that hangs up meanwhile cancels its row and frees its slot."""
    while True:
        try:
            kind, value = await asyncio.wait_for(sink.queue.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancelled.set()
            continue
        if kind == "done":
            return value
        if kind == "error":
            raise value


async def _sse(job: GenRequest, sink: AsyncSink, *, chat: bool, created: int,
               include_usage: bool, finished, model_name: str) -> AsyncIterator[bytes]:
    def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
        if chat:
            choices = [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}]
            obj = "chat.completion.chunk"
        else:
            choices = [] if usage else [{"index": 0, "text": (delta or {}).get("content", ""), "finish_reason": finish,
                                         "logprobs": None}]
            obj = "text_completion"
        payload: dict[str, Any] = {"id": job.request_id, "object": obj, "created": created,
                                   "model": model_name, "choices": choices}
        if usage:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n".encode()

    try:
        if chat:
            yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await sink.queue.get()
            if kind == "text":
                yield chunk({"content": value})
            elif kind == "error":
                yield f"data: {json.dumps(value.body())}\n\n".encode()
                return
            else:
                if value.finish_reason == "timeout":
                    await finished(value, 504)
                    error = ApiError(504, "generation timed out", type="server_error")
                    yield f"data: {json.dumps(error.body())}\n\n".encode()
                    return
                await finished(value, 200)
                yield chunk({}, value.finish_reason)
                if include_usage:
                    yield chunk(usage={"prompt_tokens": value.prompt_tokens, "completion_tokens": value.completion_tokens,
                                       "total_tokens": value.prompt_tokens + value.completion_tokens})
                yield b"data: [DONE]\n\n"
                return
    finally:
        # Reached on normal end and when the client disconnects (the task is cancelled): in the
        # second case the row stops at its next token and its batch slot frees up.
        job.cancelled.set()
