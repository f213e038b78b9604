"""The merged export of native adapters for the families whose processor differs most: Qwen2-VL (read
through ``models.vision.ImageTokenProcessor`` where the library's needs torchvision) and LLaVA. The
merged folder, reloaded with its copied processor files, passes the parity check on a row with an
image; a folder holding other weights fails it."""

from __future__ import annotations

import hashlib

import pytest
import torch
from helpers import png
from vision_models import save_tiny_vlm


def _lora(folder, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(3)
    tuned = get_peft_model(AutoModelForImageTextToText.from_pretrained(folder),
                           LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                      target_modules=r".*language_model.*\.(?:q_proj|v_proj)"))
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.mul_(30)
    tuned.save_pretrained(out)
    return out


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_merged_folder_passes_the_check_and_other_weights_fail_it(family, tiny_model_dir, tmp_path):
    from tunewright.data.schema import ChatRow
    from tunewright.export.vision import run_vision_check, write_merged
    from tunewright.models.adapters import ResolvedRef
    from tunewright.models.loading import prepare_base_model

    folder = save_tiny_vlm(family, tiny_model_dir, tmp_path / "vlm")
    base = prepare_base_model(str(folder), vision=True)
    resolved = ResolvedRef(ref="x", base=base, adapter_path=_lora(folder, tmp_path / "lora"))
    image = png((30, 160, 60))
    ref = f"media/{hashlib.sha256(image).hexdigest()}.png"
    row = ChatRow(messages=[{"role": "user", "content": [{"type": "image", "image": ref},
                                                         {"type": "text", "text": "Which colour?"}]},
                            {"role": "assistant", "content": "Green."}])
    media = {ref: image}

    merged = write_merged(resolved, tmp_path / "merged")
    report = run_vision_check(resolved, merged, [row], media, max_new_tokens=6)
    assert report["passed"], report["failures"]
    assert report["formats"]["merged"]["prompt_tokens_match"] and report["probes"] == [
        [{"role": "user", "content": f"[image: {ref}] Which colour?"}]]

    plain = write_merged(ResolvedRef(ref="base", base=base, adapter_path=None), tmp_path / "plain")
    wrong = run_vision_check(resolved, plain, [row], media, max_new_tokens=6)
    assert not wrong["passed"] and any("max logit difference" in f for f in wrong["failures"])
