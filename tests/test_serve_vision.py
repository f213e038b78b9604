"""`tunewright serve` on a vision-language base (``train.vision``): a chat request's ``image_url``
parts reach the model's own processor, and the base and its native adapters answer as plain
transformers + peft do with the same image; text-only requests still batch; audio is refused."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import pytest
import torch
from PIL import Image

from helpers import png, wav
from serve_helpers import running_server
from vision_models import save_tiny_vlm

IMAGE_COLOUR = (200, 40, 40)
MAX_TOKENS = 10


def _random_lora(folder, out, whole: str | None = None):
    """A LoRA adapter on the language model's attention with weights big enough to change answers;
    ``whole``: a module trained whole beside it (peft's ``modules_to_save``, as a trained connector is)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(1)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    tuned = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                             modules_to_save=[whole] if whole else None,
                                             target_modules=r".*(?:language_model|text_model).*\.(?:q_proj|v_proj)"))
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.mul_(30)
            elif "modules_to_save" in name:
                p.normal_(0, 0.5)
    tuned.save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["idefics3", "qwen2_vl"])
def served(request, tiny_model_dir, tmp_path_factory):
    from tunewright.config import Recipe
    from tunewright.io import sha256_file
    from tunewright.models.vision import VISION_FAMILIES
    from tunewright.serve.server import build_state
    from tunewright.workspace import Workspace

    root = tmp_path_factory.mktemp(f"serve-{request.param}")
    folder = save_tiny_vlm(request.param, tiny_model_dir, root / "vlm")
    recipe = Recipe(name="shop", base_model=str(folder), train={"vision": {"targets": ["language", "connector"]}},
                    serve={"log_requests": True})
    workspace = Workspace.init(root / "ws", recipe)
    adapter = _random_lora(folder, root / "ws" / "adapters" / "labels")
    workspace.registry.add_adapter(name="labels", path=str(adapter), method="lora", run_id=None,
                                   weights_sha256=sha256_file(adapter / "adapter_model.safetensors"),
                                   base_model_ref=str(folder), base_model_sha256=None)
    # The connector trained whole: its weights replace the base's, which a merged-LoRA lane must keep.
    connector = VISION_FAMILIES[request.param].connector.rsplit(".", 1)[-1]
    whole = _random_lora(folder, root / "ws" / "adapters" / "whole", whole=connector)
    workspace.registry.add_adapter(name="whole", path=str(whole), method="lora", run_id=None,
                                   weights_sha256=sha256_file(whole / "adapter_model.safetensors"),
                                   base_model_ref=str(folder), base_model_sha256=None)
    state = build_state(workspace)
    with running_server(state) as url:
        yield url, folder, {"labels": adapter, "whole": whole}, root / "ws"


def _reference(folder, adapter, content: list[dict], image: bytes | None) -> str:
    """Plain transformers (+ peft): the same conversation through the model's processor, greedy."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder)
    except (ImportError, AttributeError, ValueError):  # Qwen2-VL's needs torchvision: the same steps, ours
        from tunewright.models.vision import load_processor

        processor = load_processor(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    images = {"images": [[Image.open(io.BytesIO(image)).convert("RGB")]]} if image else {}
    inputs = processor(text=[text], return_tensors="pt", add_special_tokens=False, **images)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def _chat(client, url, model, content, **extra):
    return client.post(f"{url}/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": MAX_TOKENS, **extra})


def test_image_parts_are_read_by_the_base_and_its_native_adapter(served):
    import httpx

    url, folder, adapters, ws = served
    adapter = adapters["labels"]
    image = png(IMAGE_COLOUR)
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}},
               {"type": "text", "text": "Which colour?"}]
    asked = [{"type": "image"}, {"type": "text", "text": "Which colour?"}]
    with httpx.Client(timeout=120) as client:
        tuned = _chat(client, url, "labels", content)
        base = _chat(client, url, str(folder), content)
        assert tuned.status_code == 200 and base.status_code == 200, (tuned.text, base.text)
        tuned_text = tuned.json()["choices"][0]["message"]["content"]
        base_text = base.json()["choices"][0]["message"]["content"]
        # Up to the first end-of-turn token, which the server stops at and plain generate runs past.
        want_tuned, want_base = _reference(folder, adapter, asked, image), _reference(folder, None, asked, image)
        assert want_tuned.startswith(tuned_text.strip()) and want_base.startswith(base_text.strip())
        assert tuned_text != base_text  # the adapter changed the answer: it really was applied
        assert tuned.headers["x-tunewright-served"] == "labels"
        # The image moves the answer: the same words without it get the reference's text-only answer.
        text_only = _chat(client, url, "labels", [{"type": "text", "text": "Which colour?"}])
        # (The server sends the decoded text as it is; the reference strips it.)
        assert _reference(folder, adapter, [{"type": "text", "text": "Which colour?"}], None).startswith(
            text_only.json()["choices"][0]["message"]["content"].strip())
        # Streaming gives the same words piece by piece.
        pieces = []
        with client.stream("POST", f"{url}/v1/chat/completions", json={
                "model": "labels", "messages": [{"role": "user", "content": content}], "max_tokens": MAX_TOKENS,
                "stream": True}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    pieces.append(delta.get("content") or "")
        assert "".join(pieces) == tuned_text
        assert text_only.json()["choices"][0]["message"]["content"] != tuned_text  # the image was seen
        # An adapter that also replaces a whole module (the connector) answers with that module too.
        whole = _chat(client, url, "whole", content).json()["choices"][0]["message"]["content"]
        assert _reference(folder, adapters["whole"], asked, image).startswith(whole.strip())
        assert whole != tuned_text
    # The request log keeps the image as its content-addressed name, never its bytes.
    [log] = (ws / "logs" / "requests").glob("*.jsonl")
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    ref = f"media/{hashlib.sha256(image).hexdigest()}.png"
    assert logged[0]["messages"] == [{"role": "user", "content": f"[image: {ref}] Which colour?"}]
    assert logged[0]["response"] == tuned_text and base64.b64encode(image).decode()[:40] not in log.read_text()


def test_audio_and_bad_images_get_a_400_naming_the_part(served):
    import httpx

    url, *_ = served
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(0.5)).decode(), "format": "wav"}}
    with httpx.Client(timeout=120) as client:
        response = _chat(client, url, "labels", [{"type": "text", "text": "Hi"}, audio])
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == "messages[0].content[1]"
        assert "vision-language model cannot read audio" in error["message"]
        broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}}
        response = _chat(client, url, "labels", [broken])
        assert response.status_code == 400 and response.json()["error"]["param"].startswith("messages[0].content[0]")
