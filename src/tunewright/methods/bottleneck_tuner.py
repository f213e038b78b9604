"""Bottleneck adapters as a peft tuner type, so they save, load and checkpoint like peft's own methods.

Importing this module adds the ``BOTTLENECK`` type to peft; after that, plain
``PeftModel.from_pretrained`` loads the standard ``adapter_config.json`` +
``adapter_model.safetensors`` pair, and ``get_peft_model_state_dict`` /
``set_peft_model_state_dict`` (which the loop's checkpoints use) work unchanged.

peft's ``register_peft_method`` only accepts names that are members of its closed ``PeftType`` enum,
but the tables it fills are plain dicts that peft looks up with the ``peft_type`` string read from
``adapter_config.json``. ``PeftType`` is a ``str`` enum, so a plain string key behaves exactly like a
member would; we add ours directly instead of patching the enum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from peft.config import PeftConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

BOTTLENECK = "BOTTLENECK"
PREFIX = "bottleneck_"
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


@dataclass
class BottleneckConfig(PeftConfig):
    target_modules: Optional[list[str]] = field(
        default=None, metadata={"help": "linear layers whose output gets an adapter (attention and/or MLP output)"})
    bottleneck_size: Optional[int] = field(default=None, metadata={"help": "adapter width; overrides reduction_factor"})
    reduction_factor: int = field(default=16, metadata={"help": "adapter width = layer output width / this"})
    activation: str = field(default="relu", metadata={"help": "relu, gelu or silu"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = BOTTLENECK
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}")


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """``y = base(x); y + up(act(down(y)))``: a residual adapter on a sublayer's output.

    Wrapping the attention output projection and the MLP down projection puts the adapter exactly
    where Houlsby et al. place it: after each sublayer, before the residual add.
    """

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config: BottleneckConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_activation: dict[str, str] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: BottleneckConfig) -> None:
        width = self.get_base_layer().out_features
        size = config.bottleneck_size or max(1, width // config.reduction_factor)
        self.bottleneck_down[adapter_name] = nn.Linear(width, size)
        up = nn.Linear(size, width)
        # A zero up-projection makes the adapter an exact identity at step 0: training starts at the base.
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        self.bottleneck_up[adapter_name] = up
        self.bottleneck_activation[adapter_name] = config.activation
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise TypeError("a bottleneck adapter is a nonlinear module; no change to the base weights reproduces it")

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down, up = self.bottleneck_down[name], self.bottleneck_up[name]
            hidden = ACTIVATIONS[self.bottleneck_activation[name]](down(result.to(down.weight.dtype)))
            result = result + up(hidden).to(result.dtype)
        return result


class BottleneckModel(BaseTuner):
    prefix = PREFIX
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict[str, list[str]] = {}  # the method always names its modules

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config)
            return
        if not isinstance(target, nn.Linear):
            raise ValueError(f"bottleneck adapters attach to linear layers; {current_key} is a {type(target).__name__}")
        new_module = BottleneckLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)


def _register() -> None:
    for table, value in ((PEFT_TYPE_TO_CONFIG_MAPPING, BottleneckConfig), (PEFT_TYPE_TO_TUNER_MAPPING, BottleneckModel),
                         (PEFT_TYPE_TO_PREFIX_MAPPING, PREFIX)):
        table.setdefault(BOTTLENECK, value)


_register()
