"""QLoRA: LoRA on a base held in 4-bit NF4 by bitsandbytes, for bases too large for memory in fp32."""

from __future__ import annotations

from pydantic import Field

from ..errors import TunewrightError
from .base import MethodSettings, register_method
from .lora import LoraFamily


def _unavailable_reason() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "this machine has no CUDA GPU"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed"
    return None


NF4_BYTES = 0.5 + 4 / 64  # 4-bit code plus one fp32 scale per block of 64
BF16_BYTES = 2


@register_method
class QLora(LoraFamily):
    name = "qlora"
    description = "LoRA over a 4-bit NF4 base (bitsandbytes, double quantisation, bf16 compute); CUDA only"
    quantized_base = True
    smaller_alternative = None

    @classmethod
    def weight_bytes(cls, n_params: int, linear_params: int, dtype_bytes: int) -> int:
        # The linear layers in NF4; embeddings, norms and the head stay in bf16.
        return int(linear_params * NF4_BYTES + (n_params - linear_params) * BF16_BYTES)

    class Settings(MethodSettings):
        double_quant: bool = Field(True, description="quantise the quantisation constants too (saves ~0.4 bit/param)")

    def check_environment(self) -> None:
        reason = _unavailable_reason()
        if reason:
            raise TunewrightError(
                f"method 'qlora' cannot run here: {reason}, and bitsandbytes' 4-bit kernels need a CUDA GPU. "
                "Use 'method: lora' instead (fp32 on the CPU; the base is small enough to train unquantised) "
                "or 'method: dora'",
                field="train.method",
            )

    def load_base(self, base_info, spec):
        # Refuse before reading any weights: on a CPU-only machine the load itself would fail obscurely.
        self.check_environment()
        import torch
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=self.settings(spec).double_quant,
        )
        return AutoModelForCausalLM.from_pretrained(
            base_info.folder, quantization_config=quantization, dtype=torch.bfloat16,
            device_map={"": torch.cuda.current_device()}, local_files_only=True,
        )

    def wrap(self, model, spec):
        from peft import get_peft_model, prepare_model_for_kbit_training

        # Casts the few unquantised layers (norms, head) to fp32 so the 4-bit base trains stably.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(spec.gradient_checkpointing))
        return get_peft_model(model, self.peft_config(spec))
