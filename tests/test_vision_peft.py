"""Native PEFT on vision-language models, on a tiny random model of each family (``vision_models.py``)."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch

from tunewright.config import TrainSpec
from tunewright.data.schema import ChatRow
from tunewright.data.tokenize import IGNORE_INDEX
from tunewright.data.vision import collate_vision, encode_vision_row, prompt_inputs
from tunewright.errors import TunewrightError
from tunewright.models.vision import (check_parts, find_family, load_processor, load_vision_model, meta_model,
                                      part_linears)
from tunewright.train.vision import train_vision_adapter, vision_peft_config

from vision_models import BUILDERS, reloaded_logits, save_tiny_vlm

transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL")


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vlm(request, tiny_model_dir, tmp_path_factory):
    """(model_type, folder): a tiny random VLM saved as a Hugging Face folder."""
    return request.param, save_tiny_vlm(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param))


COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A dataset version folder holding one PNG per colour as media/<sha256>.png, and rows naming them."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("version")
    (folder / "media").mkdir()
    rows = []
    for name, rgb in COLOURS.items():
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), rgb).save(buffer, format="PNG")
        data = buffer.getvalue()
        ref = f"media/{hashlib.sha256(data).hexdigest()}.png"
        (folder / ref).write_bytes(data)
        rows.append(ChatRow(messages=[
            {"role": "user", "content": [{"type": "image", "image": ref}, {"type": "text", "text": "Which colour?"}]},
            {"role": "assistant", "content": f"It is {name}."},
        ]))
    return folder, rows


def _spec(**extra):
    settings = dict(r=8, alpha=16, learning_rate=1e-2, batch_size=3, max_steps=12, warmup_ratio=0.0, seed=0)
    settings.update(extra)
    return TrainSpec(**settings)


def test_parts_come_from_the_model_built_on_meta(vlm):
    model_type, folder = vlm
    family = find_family(folder)
    linears = part_linears(meta_model(folder), family)
    # The part prefixes each family keeps (written out here, independent of the table).
    expected = {"idefics3": ("model.text_model.", "model.connector.", "model.vision_model."),
                "llava": ("model.language_model.", "model.multi_modal_projector.", "model.vision_tower."),
                "qwen2_vl": ("model.language_model.", "model.visual.merger.", "model.visual.blocks."),
                "qwen2_5_vl": ("model.language_model.", "model.visual.merger.", "model.visual.blocks.")}[model_type]
    for part, prefix in zip(("language", "connector", "vision"), expected):
        assert linears[part] and all(name.startswith(prefix) for name in linears[part]), part
    assert not set(linears["vision"]) & set(linears["connector"])
    assert "lm_head" not in sum(linears.values(), [])


@pytest.mark.parametrize("targets, trained", [
    (None, {"language", "connector"}),
    (["language", "connector", "vision"], {"language", "connector", "vision"}),
    (["connector"], {"connector"}),
])
def test_targets_choose_which_parts_train(vlm, targets, trained):
    from peft import get_peft_model

    _, folder = vlm
    spec = _spec(**({"vision": {"targets": targets}} if targets else {}))
    model = load_vision_model(folder)
    family = find_family(folder)
    _, config = vision_peft_config(model, folder, spec)
    tuned = get_peft_model(model, config)
    names = [name.removeprefix("base_model.model.") for name, p in tuned.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in name for name in names)
    parts = {part for part in ("language", "connector", "vision") for name in names if family.owns(part, name)}
    assert parts == trained
    assert all(any(family.owns(part, name) for part in trained) for name in names)


def test_labels_cover_only_the_assistant_text(vlm, version):
    _, folder = vlm
    processor = load_processor(folder)
    media, rows = version
    encoded = encode_vision_row(processor, rows[0].messages, media, max_length=512)
    ids, labels = encoded.inputs["input_ids"][0], encoded.labels[0]
    labelled = processor.tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert labelled == "It is red.<|im_end|>\n"
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>" if "qwen" in vlm[0] else "<image>")
    assert (ids == image_id).any() and (labels[ids == image_id] == IGNORE_INDEX).all()
    batch = collate_vision([encoded, encode_vision_row(processor, rows[1].messages, media, 512)],
                           processor.tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 2 and "pixel_values" in batch
    expected_extra = {"idefics3": "pixel_attention_mask", "qwen2_vl": "image_grid_thw", "qwen2_5_vl": "image_grid_thw"}
    if vlm[0] in expected_extra:
        assert expected_extra[vlm[0]] in batch


def test_train_reload_generate(vlm, version, tmp_path):
    from peft import PeftModel

    _, folder = vlm
    media, rows = version
    adapter = tmp_path / "adapter"
    result = train_vision_adapter(folder=folder, rows=rows, media_folder=media, spec=_spec(), adapter_dir=adapter)
    assert result.steps == 12
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.3, result.losses  # as test_train_loop asks
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    tuned_logits, again_logits, bare_logits = reloaded_logits(folder, adapter, rows, media)
    assert torch.allclose(tuned_logits, again_logits, atol=1e-6)
    assert not torch.allclose(tuned_logits, bare_logits, atol=1e-3)  # the adapter really changes the model

    inputs = prompt_inputs(load_processor(folder), rows[0].messages, media)
    full = encode_vision_row(load_processor(folder), rows[0].messages, media, 512)
    # The prompt is the row up to the assistant's turn: a prefix of the whole row's ids.
    assert torch.equal(full.inputs["input_ids"][0, : inputs["input_ids"].shape[1]], inputs["input_ids"][0])
    tuned = PeftModel.from_pretrained(load_vision_model(folder), adapter).eval()
    with torch.no_grad():
        out = tuned.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_training_matches_the_trained_model_in_memory(vlm, version, tmp_path):
    """The reloaded adapter gives the logits of the model as training left it."""
    from peft import PeftModel, get_peft_model

    _, folder = vlm
    media, rows = version
    processor = load_processor(folder)
    spec = _spec(max_steps=2)
    torch.manual_seed(0)
    model = load_vision_model(folder)
    _, config = vision_peft_config(model, folder, spec)
    tuned = get_peft_model(model, config)
    with torch.no_grad():  # give B non-zero weights so the adapter's effect is visible
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    tuned.save_pretrained(tmp_path / "a")
    batch = collate_vision([encode_vision_row(processor, r.messages, media, 512) for r in rows],
                           processor.tokenizer.pad_token_id)
    batch.pop("labels")
    reloaded = PeftModel.from_pretrained(load_vision_model(folder), tmp_path / "a").eval()
    with torch.no_grad():
        assert torch.allclose(tuned.eval()(**batch).logits, reloaded(**batch).logits, atol=1e-6)


def test_a_text_model_is_refused_naming_model_type(tiny_model_dir):
    with pytest.raises(TunewrightError, match="model_type 'llama' is not a vision-language model") as caught:
        find_family(tiny_model_dir)
    assert caught.value.field == "model_type"


def test_unknown_part_is_refused_naming_the_field():
    with pytest.raises(TunewrightError) as caught:
        check_parts(["language", "eyes"])
    assert caught.value.field == "train.vision.targets" and "eyes" in str(caught.value)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="vision.targets"):
        TrainSpec(vision={"targets": ["eyes"]})
    with pytest.raises(ValidationError):
        TrainSpec(vision={"targets": []})


def test_encoding_refuses_missing_media_and_audio(vlm, version, tmp_path):
    from tunewright.errors import NotFoundError

    processor = load_processor(vlm[1])
    media, rows = version
    with pytest.raises(NotFoundError, match="media file of the dataset version is missing"):
        encode_vision_row(processor, rows[0].messages, tmp_path, max_length=512)  # a folder without its media
    clip = ChatRow(messages=[{"role": "user", "content": [{"type": "audio", "audio": "media/" + "0" * 64 + ".wav"}]},
                             {"role": "assistant", "content": "ok"}])
    with pytest.raises(TunewrightError, match="cannot read audio parts"):
        encode_vision_row(processor, clip.messages, media, max_length=512)
    with pytest.raises(TunewrightError, match="over max_length=16"):
        encode_vision_row(processor, rows[0].messages, media, max_length=16)
