"""What one `tunewright serve` process holds: the base model, its adapters, the engine, the logs,
and how a request's ``model`` name (an adapter, the base, or a deployment alias) becomes a model."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config.serve import ServeSpec
from ..errors import TunewrightError
from ..models.adapters import checked_adapter_folder
from ..models.loading import load_model, load_tokenizer, prepare_base_model
from ..registry.deploy import ALIASES, DeploymentStore, split_adapter_ref
from ..retrieval.context import current_index, retriever_for
from .engine import Engine
from .guards import is_loopback
from .metrics import ServeMetrics
from .monitoring import RecentResponses, RequestLog
from .pool import BASE, AdapterPool, ServedModel
from .protocol import ApiError

log = logging.getLogger(__name__)
ALIAS_CACHE_S = 1.0  # an alias change reaches the server within a second, without a registry read per request


def _keys(env: str) -> frozenset[str]:
    return frozenset(k.strip() for k in os.environ.get(env, "").split(",") if k.strip())


@dataclass
class ServeState:
    workspace: object
    spec: ServeSpec
    pool: AdapterPool
    tokenizer: object
    engine: Engine
    metrics: ServeMetrics
    request_log: RequestLog
    recent: RecentResponses
    inference_keys: frozenset[str]
    admin_keys: frozenset[str]
    context_length: int
    processor: object | None = None  # a vision-language base's processor: chat requests go through it
    started_at: float = field(default_factory=time.time)
    _alias_cache: dict = field(default_factory=dict)
    _retrievers: dict = field(default_factory=dict)

    @property
    def deployments(self) -> DeploymentStore:
        return DeploymentStore(self.workspace.registry)

    @property
    def adapters_root(self) -> Path:
        return (self.workspace.root / "adapters").resolve()

    def public_names(self) -> list[str]:
        names = list(self.pool.models)
        names.append(self.workspace.recipe.base_model)
        return sorted(set(names)) + [a for a in ALIASES if self._alias(a) is not None]

    # -- name resolution -----------------------------------------------------------------------

    def _alias(self, alias: str):
        cached = self._alias_cache.get(alias)
        now = time.monotonic()
        if cached is None or now - cached[0] > ALIAS_CACHE_S:
            cached = (now, self.deployments.get_alias(alias))
            self._alias_cache[alias] = cached
        return cached[1]

    async def resolve(self, name: str, user: str | None = None) -> ServedModel:
        # Aliases first: they are what the release gates guard, and no loaded name may stand in for one.
        if name in ALIASES:
            state = self._alias(name)
            if state is None or state.adapter is None:
                raise ApiError(404, f"alias '{name}' points at no adapter yet", param="model", code="model_not_found")
            record = state.adapter
            if state.split_adapter is not None and _in_split(user, state.split_percent):
                record = state.split_adapter
            return await self.ensure_loaded(record)
        if name == self.workspace.recipe.base_model:
            return self.pool.models[BASE]
        if name in self.pool.models:
            return self.pool.models[name]
        raise ApiError(404, f"model '{name}' does not exist here (known: {', '.join(self.public_names())})",
                       param="model", code="model_not_found")

    def with_records(self, served: ServedModel, messages: list[dict]) -> list[dict]:
        """The conversation as an open-book adapter must see it (records from its index in the system
        message); unchanged for closed-book adapters and the base. The newest index version is looked
        up at most once a second, so `tunewright index build` after a catalog edit reaches the served
        adapter without a restart or retraining."""
        if served.folder is None:
            return messages
        now = time.monotonic()
        cached = self._retrievers.get(served.folder)
        if cached is None or now - cached[0] > ALIAS_CACHE_S:
            retriever = cached[1] if cached else None
            if retriever is not None:
                record, _ = current_index(self.workspace, retriever.config.index)
                if f"{record.name}@{record.version}" != retriever.index_ref:
                    retriever = None
            if retriever is None:
                retriever = retriever_for(self.workspace, served.folder)
            cached = (now, retriever)
            self._retrievers[served.folder] = cached
        retriever = cached[1]
        return messages if retriever is None else retriever.augment(messages)

    async def ensure_loaded(self, record) -> ServedModel:
        for served in self.pool.adapters():
            if served.adapter_id == record.id:
                return served
        name = f"{record.name}@{record.version}"
        future = self.engine.call(lambda: self.pool.models.get(name) or self.pool.load(
            name, checked_adapter_folder(record, self.pool.base), adapter_id=record.id, source=f"registry {name}"))
        try:
            return await asyncio.wrap_future(future)
        except TunewrightError as exc:
            raise ApiError(500, f"cannot load '{name}': {exc}", type="server_error") from None


def _in_split(user: str | None, percent: int) -> bool:
    # A named user always lands on the same side of the test; anonymous requests are split at random.
    if user:
        bucket = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) % 100
        return bucket < percent
    return random.random() * 100 < percent


def _registered(registry, ref: str):
    return registry.get_adapter(*split_adapter_ref(ref))


def load_startup_adapters(state: ServeState) -> list[str]:
    """The recipe's ``serve.adapters``, or every registered adapter's latest version."""
    registry = state.workspace.registry
    explicit = state.spec.adapters is not None
    refs = state.spec.adapters if explicit else sorted({a.name for a in registry.list_adapters()})
    loaded = []
    for ref in refs:
        folder = Path(ref)
        try:
            if folder.is_dir():
                state.pool.load(folder.name, folder.resolve(), source=str(folder.resolve()))
                loaded.append(folder.name)
                continue
            record = _registered(registry, ref)
            state.pool.load(ref, checked_adapter_folder(record, state.pool.base), adapter_id=record.id,
                            source=f"registry {record.name}@{record.version}")
            loaded.append(ref)
        except TunewrightError as exc:
            if explicit:
                raise TunewrightError(f"cannot serve adapter '{ref}': {exc}", field="serve.adapters") from None
            log.warning("skipping adapter %s: %s", ref, exc)
    return loaded


def check_exposure(spec: ServeSpec, inference_keys: frozenset[str]) -> None:
    """Without keys the API answers anyone who can reach the address; on loopback that is this
    machine only, anywhere else it must be asked for."""
    if inference_keys or spec.insecure or is_loopback(spec.host):
        return
    raise TunewrightError(f"refusing to serve on {spec.host or 'every address'} without inference keys: set "
                          f"{spec.api_keys_env}, listen on 127.0.0.1, or pass --insecure (serve.insecure: true) "
                          "to let anyone who can reach it use the API", field="serve.host")


def build_state(workspace, spec: ServeSpec | None = None) -> ServeState:
    spec = spec or workspace.recipe.serve
    inference_keys = _keys(spec.api_keys_env)
    check_exposure(spec, inference_keys)  # before minutes of model loading
    vision = workspace.recipe.train.vision is not None
    base = prepare_base_model(workspace.recipe.base_model, vision=vision)
    processor = None
    if vision:  # the native adapters' base: its processor reads a request's images, as eval's does
        from ..models.vision import load_processor, load_vision_model

        processor = load_processor(base.folder)
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        model = load_vision_model(base.folder)
        load_base = lambda: load_vision_model(base.folder)  # noqa: E731
    else:
        tokenizer = load_tokenizer(base, padding_side="left")
        model = load_model(base)
        load_base = lambda: load_model(base)  # noqa: E731
    pool = AdapterPool(base, model, max_adapters=spec.max_adapters, merge_hot_adapter=spec.merge_hot_adapter,
                       reserved_names=frozenset(ALIASES) | {workspace.recipe.base_model}, load_base=load_base)
    # The gauges read the engine when scraped, after it exists.
    metrics = ServeMetrics(lambda: engine.queue_depth, lambda: len(pool.adapters()))
    engine = Engine(pool, tokenizer, max_batch_size=spec.max_batch_size, batch_wait_ms=spec.batch_wait_ms,
                    max_queue=spec.max_queue, on_batch=metrics.observe_batch,
                    on_finish=lambda request, result: metrics.observe_finish(request.target.name, result))
    state = ServeState(
        workspace=workspace, spec=spec, pool=pool, tokenizer=tokenizer, engine=engine, metrics=metrics,
        request_log=RequestLog(workspace.root / "logs" / "requests", enabled=spec.log_requests,
                               redact_pii=spec.redact_pii),
        recent=RecentResponses(redact_pii=spec.redact_pii), inference_keys=inference_keys,
        admin_keys=_keys(spec.admin_keys_env),
        context_length=int(getattr(model.config.get_text_config(), "max_position_embeddings", 2048)),
        processor=processor)
    load_startup_adapters(state)
    return state


def known_adapter_or_404(registry, ref: str):
    try:
        return _registered(registry, ref)
    except TunewrightError as exc:  # not registered, or a version that is not a number
        raise ApiError(404, str(exc), param="adapter", code="adapter_not_found") from None
