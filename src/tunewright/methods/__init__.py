"""PEFT methods behind a registry: adding one is one class and one registration.

Built-in families, one module each: the LoRA family (``lora``), QLoRA (``qlora``), prompt learning
(``prompt``), IA3 (``ia3``), LLaMA-Adapter (``adaption_prompt``) and bottleneck adapters
(``bottleneck``). None of them imports torch or peft until it is used.
"""

from __future__ import annotations

from . import adaption_prompt, bottleneck, ia3, lora, prompt, qlora  # noqa: F401  (registration)
from .base import METHODS, SETTINGS_FIELD, MethodSettings, PeftMethod, available_methods, get_method, register_method
from .checks import (MergePolicy, adapter_shares_lane, check_method, linear_module_names, merge_policy,
                     methods_saving, parameter_counts, vllm_refusal)

__all__ = [
    "METHODS",
    "SETTINGS_FIELD",
    "MergePolicy",
    "adapter_shares_lane",
    "MethodSettings",
    "PeftMethod",
    "available_methods",
    "check_method",
    "get_method",
    "linear_module_names",
    "merge_policy",
    "methods_saving",
    "parameter_counts",
    "register_method",
    "vllm_refusal",
]
