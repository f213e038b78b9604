"""Adapters held in memory on one base model, each reachable by name.

Plain LoRA adapters share one ``PeftModel`` (the *shared lane*), so one batch can mix them and the
base model: peft routes each row through its own adapter (``adapter_names``). Every other method
(DoRA, IA3, prefix/prompt tuning, bottleneck) changes the forward pass for the whole batch, so each
gets its own lane on its own copy of the base weights, merged where the method allows, and its
requests are batched only with each other.

All mutation happens on the engine's worker thread, between batches; lookups from the HTTP side
only read dictionaries.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import NotFoundError, TunewrightError
from ..methods import adapter_shares_lane
from ..models.adapters import read_adapter_config
from ..models.loading import BaseModelInfo, load_model

BASE = "base"
PEFT_BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
COMBINATIONS = {
    # our name -> peft's add_weighted_adapter combination_type
    "linear": "linear",
    "cat": "cat",
    "ties": "ties",
    "dare_linear": "dare_linear",
    "dare_ties": "dare_ties",
    "svd": "svd",
}


@dataclass(eq=False)
class Lane:
    """One model object; ``shared`` lanes take rows for different adapters in one batch."""

    name: str
    model: object
    shared: bool
    virtual_tokens: int = 0  # prompt-learning adapters spend context on their virtual tokens


@dataclass(eq=False)
class ServedModel:
    name: str  # what clients put in the request's ``model`` field
    lane: Lane
    peft_name: str | None  # the adapter's name inside a shared lane; None for base and own lanes
    peft_type: str
    source: str  # folder, registry reference, or "combined: ..."
    adapter_id: int | None = None
    details: dict = field(default_factory=dict)
    folder: Path | None = None  # where the adapter's files are (None for the base and combinations)

    @property
    def batch_name(self) -> str:
        return self.peft_name or PEFT_BASE


def verify_adapter_weights(folder: Path) -> None:
    """Read every tensor once, so a truncated or corrupted file is refused before peft touches the
    model (a half-applied load would leave injected layers behind)."""
    from safetensors import safe_open

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise TunewrightError("adapter has no adapter_model.safetensors (only safetensors are loaded)", file=folder)
    try:
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise TunewrightError(f"corrupted adapter weights: {exc}", file=weights) from None


class AdapterPool:
    def __init__(self, base: BaseModelInfo, base_model, *, max_adapters: int = 16,
                 merge_hot_adapter: bool = True, reserved_names: frozenset[str] = frozenset(),
                 load_base: Callable[[], object] | None = None) -> None:
        self.base = base
        # A fresh copy of the base weights for an adapter that needs its own lane (a vision-language
        # base loads through its own class).
        self.load_base = load_base or (lambda: load_model(base))
        # Names requests reach something else by (the deployment aliases, the base model's name):
        # an adapter loaded under one of them would shadow it and bypass the release gates.
        self.reserved_names = frozenset(n.casefold() for n in reserved_names | {BASE})
        self.max_adapters = max_adapters
        self.shared = Lane("shared", base_model, shared=True)
        self.models: dict[str, ServedModel] = {BASE: ServedModel(BASE, self.shared, None, "BASE", base.ref)}
        self.merge_hot_adapter = merge_hot_adapter
        self._merged_name: str | None = None  # which adapter the merged buffers hold
        self._merged: dict[int, torch.Tensor] = {}  # id(LoRA layer) -> base weight + that adapter's delta

    # -- lookups (any thread) ------------------------------------------------------------------

    def get(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise NotFoundError(f"model '{name}' is not loaded (loaded: {', '.join(sorted(self.models))})")
        return served

    def is_current(self, served: ServedModel) -> bool:
        return self.models.get(served.name) is served

    def adapters(self) -> list[ServedModel]:
        return [m for m in self.models.values() if m.name != BASE]

    # -- changes (worker thread only) ----------------------------------------------------------

    def _check_new_name(self, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}", name or ""):
            raise TunewrightError(f"invalid model name '{name}' (letters, digits, . _ @ : -)", field="name")
        if name.casefold() in self.reserved_names:
            raise TunewrightError(f"'{name}' is a reserved name (a deployment alias or the base model); "
                                  "choose another", field="name")
        if name in self.models:
            raise TunewrightError(f"a model named '{name}' is already loaded", field="name")
        if len(self.models) - 1 >= self.max_adapters:
            raise TunewrightError(f"{self.max_adapters} adapters are loaded already (serve.max_adapters); "
                                  "unload one first", field="name")

    def _peft_name(self, name: str) -> str:
        # peft keeps adapters in ModuleDicts, whose keys may not contain dots.
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name)
        taken = set(getattr(self.shared.model, "peft_config", {}) or {})
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        return candidate

    def load(self, name: str, folder: Path, *, adapter_id: int | None = None, source: str | None = None) -> ServedModel:
        self._check_new_name(name)
        folder = Path(folder)
        config = read_adapter_config(folder)
        verify_adapter_weights(folder)
        peft_type = str(config["peft_type"])
        if adapter_shares_lane(config):
            served = self._load_shared(name, folder, peft_type)
        else:
            served = self._load_own_lane(name, folder, peft_type)
        served.adapter_id, served.source, served.folder = adapter_id, source or str(folder), folder
        served.details = {"r": config.get("r"), "method": "dora" if config.get("use_dora") else peft_type.lower()}
        self.models[name] = served
        return served

    def _load_shared(self, name: str, folder: Path, peft_type: str) -> ServedModel:
        from peft import PeftModel

        peft_name = self._peft_name(name)
        model = self.shared.model
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(str(folder), adapter_name=peft_name)
            else:
                self.shared.model = PeftModel.from_pretrained(model, str(folder), adapter_name=peft_name)
        except Exception as exc:  # shape mismatches, wrong target modules: peft's many error types
            self._forget_broken(peft_name, model)
            raise TunewrightError(f"cannot load adapter on {self.base.ref}: {exc}", file=folder) from None
        self.shared.model.eval()
        return ServedModel(name, self.shared, peft_name, peft_type, str(folder))

    def _forget_broken(self, peft_name: str, before) -> None:
        from peft import PeftModel

        current = self.shared.model
        if isinstance(current, PeftModel) and peft_name in current.peft_config:
            if len(current.peft_config) > 1:
                current.delete_adapter(peft_name)
            else:
                self.shared.model = current.unload()
        elif not isinstance(before, PeftModel) and current is before:
            # from_pretrained failed after injecting layers into the base: take them out again.
            from peft.tuners.tuners_utils import BaseTunerLayer

            if any(isinstance(m, BaseTunerLayer) for m in before.modules()):
                raise TunewrightError("the base model was left with a half-loaded adapter; restart the server")

    def _load_own_lane(self, name: str, folder: Path, peft_type: str) -> ServedModel:
        from ..methods.attach import load_adapter

        try:
            attached = load_adapter(self.load_base(), folder, merge=True)
        except TunewrightError:
            raise
        except Exception as exc:
            raise TunewrightError(f"cannot load adapter on {self.base.ref}: {exc}", file=folder) from None
        model = attached.model
        virtual = 0
        config = getattr(model, "active_peft_config", None)
        if config is not None and config.is_prompt_learning:
            virtual = int(config.num_virtual_tokens)
        lane = Lane(name, model, shared=False, virtual_tokens=virtual)
        return ServedModel(name, lane, None, peft_type, str(folder))

    def unload(self, name: str) -> None:
        if name == BASE:
            raise TunewrightError("the base model cannot be unloaded", field="name")
        served = self.get(name)
        del self.models[name]
        if served.peft_name == self._merged_name:
            self._merged_name, self._merged = None, {}
        if served.peft_name is not None:
            model = self.shared.model
            if len(model.peft_config) > 1:
                model.delete_adapter(served.peft_name)
            else:
                self.shared.model = model.unload()  # back to the plain base model, no LoRA layers left

    def combine(self, name: str, sources: list[str], weights: list[float], *, method: str = "linear",
                density: float | None = None) -> ServedModel:
        """A new adapter from loaded LoRA adapters through peft's ``add_weighted_adapter``."""
        self._check_new_name(name)
        if method not in COMBINATIONS:
            raise TunewrightError(f"unknown combination '{method}' (known: {', '.join(COMBINATIONS)})",
                                  field="method")
        if len(sources) < 2 and method != "linear":
            raise TunewrightError("combining needs at least two adapters", field="adapters")
        if not sources or len(weights) != len(sources):
            raise TunewrightError("give one weight per adapter", field="weights")
        members = [self.get(source) for source in sources]
        for member in members:
            if member.peft_name is None:
                raise TunewrightError(f"'{member.name}' is not a plain LoRA adapter; only those combine",
                                      field="adapters")
        if method.startswith(("ties", "dare")) and not (density and 0 < density <= 1):
            raise TunewrightError(f"'{method}' needs a density between 0 and 1", field="density")
        peft_name = self._peft_name(name)
        kwargs = {"density": density} if density is not None else {}
        try:
            self.shared.model.add_weighted_adapter([m.peft_name for m in members], list(weights), peft_name,
                                                   combination_type=COMBINATIONS[method], **kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            if peft_name in self.shared.model.peft_config:
                self.shared.model.delete_adapter(peft_name)
            raise TunewrightError(f"peft cannot combine these adapters with '{method}': {exc}",
                                  field="method") from None
        self.shared.model.eval()
        source = f"combined: {method} of " + ", ".join(f"{w:g}x {m.name}" for m, w in zip(members, weights))
        served = ServedModel(name, self.shared, peft_name, "LORA", source,
                             details={"method": method, "adapters": sources, "weights": list(weights),
                                      "density": density})
        self.models[name] = served
        return served

    # -- how a batch runs on the shared lane ---------------------------------------------------

    def _lora_layers(self):
        from peft.tuners.lora import LoraLayer

        return [m for m in self.shared.model.modules() if isinstance(m, LoraLayer)]

    def _merge_into_buffers(self, peft_name: str) -> None:
        for layer in self._lora_layers():
            if peft_name not in layer.lora_A:
                continue
            weight = layer.get_base_layer().weight
            buffer = self._merged.get(id(layer))
            if buffer is None or buffer.shape != weight.shape:
                buffer = torch.empty_like(weight)
                self._merged[id(layer)] = buffer
            torch.add(weight.data, layer.get_delta_weight(peft_name).to(weight.dtype), out=buffer)
        self._merged_name = peft_name

    @contextmanager
    def batch_mode(self, lane: Lane, batch_names: list[str]) -> Iterator[list[str] | None]:
        """Run a shared-lane batch the cheapest exact way; yields the ``adapter_names`` to pass, or None.

        peft's mixed-batch path costs a gather, two small matmuls and a scatter per LoRA layer and
        token, even when every row wants the same adapter. A batch of base rows runs with the
        adapters switched off; a batch for one adapter runs on weights with that adapter merged in
        (kept in one set of buffers, rebuilt only when another adapter becomes the hot one), so it
        decodes at base-model speed. Only batches that really mix adapters take the mixed path.
        """
        from peft import PeftModel

        model = lane.model
        if not lane.shared or not isinstance(model, PeftModel):
            yield None
            return
        names = set(batch_names)
        if names == {PEFT_BASE}:
            with model.disable_adapter():
                yield None
            return
        if len(names) > 1 or not self.merge_hot_adapter:
            yield batch_names
            return
        (peft_name,) = names
        if self._merged_name != peft_name:
            self._merge_into_buffers(peft_name)
        swapped = []
        try:
            for layer in self._lora_layers():
                buffer = self._merged.get(id(layer))
                if buffer is not None and peft_name in layer.lora_A:
                    weight = layer.get_base_layer().weight
                    swapped.append((weight, weight.data))
                    weight.data = buffer
            with model.disable_adapter():
                yield None
        finally:
            for weight, original in swapped:
                weight.data = original
