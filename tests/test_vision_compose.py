"""A LLaVA-style model joined from a vision encoder folder and a causal LM folder (models.compose):
both keep their weights, the projector trains in full beside LoRA on the language model, and the
adapter (one standard PEFT folder) reloads to the same logits. Tiny random models, no downloads."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
from safetensors import safe_open

from tunewright.config import TrainSpec
from tunewright.data.schema import ChatRow
from tunewright.data.vision import collate_vision, encode_vision_row
from tunewright.errors import TunewrightError
from tunewright.models.compose import IMAGE_TOKEN, compose_llava
from tunewright.models.vision import load_processor, load_vision_model
from tunewright.train.vision import train_vision_adapter
from vision_models import reloaded_logits

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny CLIP vision encoder with its image processor (28 px images, 14 px patches)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip-vision")
    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=28, patch_size=14)
    transformers.CLIPVisionModel(config).save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def joined(encoder_dir, tiny_model_dir, tmp_path_factory):
    torch.manual_seed(0)
    return compose_llava(encoder_dir, tiny_model_dir, tmp_path_factory.mktemp("joined") / "llava")


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("version")
    (folder / "media").mkdir()
    rows = []
    for name, rgb in {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}.items():
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), rgb).save(buffer, format="PNG")
        ref = f"media/{hashlib.sha256(buffer.getvalue()).hexdigest()}.png"
        (folder / ref).write_bytes(buffer.getvalue())
        rows.append(ChatRow(messages=[
            {"role": "user", "content": [{"type": "image", "image": ref}, {"type": "text", "text": "Which colour?"}]},
            {"role": "assistant", "content": f"It is {name}."}]))
    return folder, rows


def test_both_models_keep_their_weights_and_the_tokenizer_gains_the_image_token(joined, encoder_dir, tiny_model_dir):
    model = load_vision_model(joined)
    encoder = transformers.CLIPVisionModel.from_pretrained(encoder_dir)
    language = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for name, weight in encoder.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], weight), name
    own = model.model.language_model.state_dict()
    for name, weight in language.model.state_dict().items():
        if name == "embed_tokens.weight":
            assert torch.equal(own[name][: weight.shape[0]], weight) and own[name].shape[0] == weight.shape[0] + 1
        else:
            assert torch.equal(own[name], weight), name
    processor = load_processor(joined)
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == model.config.image_token_index == len(processor.tokenizer) - 1


def test_the_language_models_template_places_the_image(joined, version, tiny_model_dir):
    processor = load_processor(joined)
    media, rows = version
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}]}],
                                         tokenize=False, add_generation_prompt=True)
    plain = transformers.AutoTokenizer.from_pretrained(tiny_model_dir).apply_chat_template(
        [{"role": "user", "content": IMAGE_TOKEN + "\nWhich colour?"}], tokenize=False, add_generation_prompt=True)
    assert text == plain  # the LM's own template, the image where the part was
    row = encode_vision_row(processor, rows[0].messages, media, 512)
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((row.inputs["input_ids"] == image_id).sum()) == 4  # (28 / 14)^2 patches; the CLS feature dropped


def test_projector_trains_in_full_with_lora_on_the_language_model_and_reloads(joined, version, tmp_path):
    media, rows = version
    spec = TrainSpec(r=8, alpha=16, learning_rate=1e-2, batch_size=3, max_steps=12, warmup_ratio=0.0, seed=0,
                     vision={"targets": ["language"], "full": ["connector"]})
    adapter = tmp_path / "adapter"
    result = train_vision_adapter(folder=joined, rows=rows, media_folder=media, spec=spec, adapter_dir=adapter)
    assert sum(result.losses[-3:]) / 3 < result.losses[0] - 0.3, result.losses
    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        projector = {k: f.get_tensor(k) for k in keys if "multi_modal_projector" in k}
    # The whole projector (both linears, weights and biases) is in the adapter; LoRA only on the LM.
    assert len(projector) == 4 and not any("lora" in k for k in projector)
    assert {k.split(".")[3] for k in keys if "lora_" in k} == {"language_model"}
    fresh = load_vision_model(joined).model.multi_modal_projector.linear_1.weight
    trained = next(v for k, v in projector.items() if k.endswith("linear_1.weight"))
    assert not torch.allclose(trained, fresh)  # it trained

    one, two, bare = reloaded_logits(joined, adapter, rows, media)
    assert torch.allclose(one, two, atol=1e-6) and not torch.allclose(one, bare, atol=1e-3)


def test_a_language_model_as_the_encoder_is_refused_naming_model_type(tiny_model_dir, tmp_path):
    with pytest.raises(TunewrightError, match="model_type 'llama' is not a vision encoder") as info:
        compose_llava(tiny_model_dir, tiny_model_dir, tmp_path / "x")
    assert info.value.field == "model_type" and not (tmp_path / "x").exists()


def test_a_part_both_adapted_and_trained_whole_is_refused():
    with pytest.raises(Exception, match="connector is in both targets"):
        TrainSpec(vision={"targets": ["language", "connector"], "full": ["connector"]})


def test_the_cli_joins_the_models_and_refuses_an_existing_folder(encoder_dir, tiny_model_dir, tmp_path, capsys):
    from helpers import run_cli

    out = tmp_path / "joined"
    code, said, err = run_cli(["compose", "--vision", encoder_dir, "--language", tiny_model_dir, "--out", out], capsys)
    assert code == 0, err
    assert transformers.AutoConfig.from_pretrained(out).model_type == "llava" and "train.vision" in " ".join(said.split())
    code, _, err = run_cli(["compose", "--vision", encoder_dir, "--language", tiny_model_dir, "--out", out], capsys)
    assert code == 2 and "exists; choose a new folder" in err
