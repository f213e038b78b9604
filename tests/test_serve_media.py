"""`tunewright serve` with OpenAI image and audio parts: an adapter trained on aligned rows reads them
through its own alignment (fake engines here: the text each file "shows" is set by the test) and
answers exactly as it answers the aligned text typed; everything else gets a 400 naming the part."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import shutil
import struct
import subprocess
import wave
from typing import ClassVar

import httpx
import openai
import pytest
from PIL import Image
from pydantic import BaseModel, ConfigDict

from helpers import png, wav
from serve_helpers import make_adapter, running_server
from tunewright.align import AlignEngine, EngineResult, register_aligner
from tunewright.align.adapter import AlignmentConfig

SHOWS: dict[str, str] = {}  # sha256 of the file -> its text


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Fake(AlignEngine):
    package = "pydantic"
    Settings = _Settings
    Result = EngineResult
    calls: ClassVar[int] = 0

    def model_identity(self, settings: BaseModel) -> str:
        return f"{self.name}-v1"

    def run(self, path, settings: BaseModel) -> EngineResult:
        return EngineResult(text=SHOWS[hashlib.sha256(path.read_bytes()).hexdigest()])


@register_aligner
class FakeOcrServe(_Fake):
    name, modality = "fake-ocr-serve", "image"


@register_aligner
class FakeAsrServe(_Fake):
    name, modality = "fake-asr-serve", "audio"


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


TAG, CLIP = png((200, 30, 30)), wav(1.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    from tunewright.config import Recipe
    from tunewright.io import sha256_file
    from tunewright.serve.server import build_state
    from tunewright.workspace import Workspace

    SHOWS.update({hashlib.sha256(TAG).hexdigest(): "Ridgeback 2 Tent\n$189",
                  hashlib.sha256(CLIP).hexdigest(): "how long is the warranty"})
    root = tmp_path_factory.mktemp("serve-media") / "ws"
    # Clips over 2 s are refused, as a three-hour recording is under the default 300 s.
    recipe = Recipe(name="shop", base_model=str(tiny_model_dir), data={"media": {"audio_max_seconds": 2}},
                    serve={"max_request_bytes": 2_000_000, "log_requests": True})
    workspace = Workspace.init(root, recipe)
    for name, seed in (("reader", 1), ("plain", 2)):
        folder = make_adapter(tiny_model_dir, root / "adapters" / name, seed=seed)
        workspace.registry.add_adapter(name=name, path=str(folder), weights_sha256=sha256_file(
            folder / "adapter_model.safetensors"), method="lora", run_id=None, base_model_ref=str(tiny_model_dir),
            base_model_sha256=None)
    AlignmentConfig(layout="aligned-v1", engines={"image": "fake-ocr-serve", "audio": "fake-asr-serve"},
                    settings={"fake-ocr-serve": {}, "fake-asr-serve": {}}, dataset="shop-aligned@x").save(
        root / "adapters" / "reader")
    state = build_state(workspace)
    with running_server(state) as url:
        yield url, workspace


def typed_answer(workspace, text: str) -> str:
    """What the reader adapter answers, loaded by plain peft, when the aligned text is typed."""
    from peft import PeftModel

    from tunewright.models import load_model, load_tokenizer, prepare_base_model
    from tunewright.models.generation import generate_responses

    base = prepare_base_model(workspace.recipe.base_model)
    model = PeftModel.from_pretrained(load_model(base), workspace.root / "adapters" / "reader").eval()
    return generate_responses(model, load_tokenizer(base, padding_side="left"), [[{"role": "user", "content": text}]],
                              max_new_tokens=12, batch_size=1)[0]


def post(url, model, content):
    return httpx.post(url + "/v1/chat/completions", timeout=60,
                      json={"model": model, "max_tokens": 12, "messages": [{"role": "user", "content": content}]})


def test_image_and_audio_parts_are_answered_as_their_aligned_text(server):
    url, workspace = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="reader", max_tokens=12, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(TAG)}}, {"type": "text", "text": "how much is this?"}]}])
    # The aligned-v1 layout, written out by hand (README, "Multi-modal rows").
    assert reply.choices[0].message.content == typed_answer(
        workspace, "[image text]\nRidgeback 2 Tent\n$189\n[/image text]\n\nhow much is this?")
    spoken = client.chat.completions.create(model="reader", max_tokens=12, messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(CLIP).decode(), "format": "wav"}}]}])
    assert spoken.choices[0].message.content == typed_answer(
        workspace, "[audio transcript]\nhow long is the warranty\n[/audio transcript]")
    # The request log keeps what the model read, not the request's base64.
    logged = [json.loads(line) for f in sorted((workspace.root / "logs" / "requests").glob("*.jsonl"))
              for line in f.read_text().splitlines()]
    contents = [r["messages"][0]["content"] for r in logged]
    assert "[image text]\nRidgeback 2 Tent\n$189\n[/image text]\n\nhow much is this?" in contents
    assert not any("base64" in json.dumps(r) for r in logged)


@pytest.mark.parametrize("model, part, param, message", [
    ("plain", {"type": "image_url", "image_url": {"url": data_url(TAG)}}, "messages[0].content[0]",
     "model 'plain' reads text only; image parts need an adapter trained on a `tunewright data align` dataset"),
    ("peft-base", {"type": "image_url", "image_url": {"url": data_url(TAG)}}, "messages[0].content[0]", "reads text only"),
    ("reader", {"type": "image_url", "image_url": {"url": "data:image/png;base64,not*base64"}},
     "messages[0].content[0].image_url.url", "is not valid base64"),
    ("reader", {"type": "image_url", "image_url": {"url": data_url(b"these bytes are no picture")}},
     "messages[0].content[0].image_url.url", "is not an image"),
    ("reader", {"type": "image_url", "image_url": {"url": data_url(png((0, 0, 0), (40_000, 1)))}},
     "messages[0].content[0].image_url.url", "8192"),
    ("reader", {"type": "image_url", "image_url": {"url": "/etc/passwd"}}, "messages[0].content[0].image_url.url",
     "must be a data URL"),
    ("reader", {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(3.0)).decode(), "format": "wav"}},
     "messages[0].content[0].input_audio.data", "2"),
    ("reader", {"type": "input_audio", "input_audio": {"data": base64.b64encode(CLIP).decode(), "format": "mp3"}},
     "messages[0].content[0].input_audio.format", "says mp3 but the data is wav"),
    ("reader", {"type": "video_url", "video_url": {"url": "x"}}, "messages[0].content[0].type", "not taken here"),
])
def test_bad_parts_get_a_400_naming_the_part(server, model, part, param, message):
    url, workspace = server
    model = workspace.recipe.base_model if model == "peft-base" else model
    reply = post(url, model, [part, {"type": "text", "text": "what is this?"}])
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and message in error["message"] and error["type"] == "invalid_request_error"


def test_text_requests_are_unchanged(server):
    url, _ = server
    reply = post(url, "plain", [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}])
    assert reply.status_code == 200
    missing_role = httpx.post(url + "/v1/chat/completions", timeout=30,
                              json={"model": "plain", "messages": [{"content": "hi"}]})
    assert missing_role.status_code == 400 and missing_role.json()["error"]["param"] == "messages.0.role"


def test_generate_reads_image_and_audio_files_through_the_adapters_alignment(server, tmp_path, capsys):
    """`tunewright generate` takes the same rows as import (parts naming files beside the JSONL): the
    reader adapter answers them as the aligned text typed; a text-only adapter is refused naming the row."""
    from helpers import run_cli, write_jsonl

    _, workspace = server
    (tmp_path / "tag.png").write_bytes(TAG)
    (tmp_path / "clip.wav").write_bytes(CLIP)
    rows = write_jsonl(tmp_path / "rows.jsonl", [
        {"prompt": "hello"},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "tag.png"},
                                                   {"type": "text", "text": "how much is this?"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": "clip.wav"}]}]}])
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli(["-w", workspace.root, "generate", "--model", "reader", "-i", rows, "-o", out,
                            "--max-new-tokens", "12"], capsys)
    assert code == 0, err
    answers = [json.loads(line)["response"] for line in out.read_text().splitlines()]
    assert answers[1:] == [typed_answer(workspace, "[image text]\nRidgeback 2 Tent\n$189\n[/image text]\n\nhow much is this?"),
                           typed_answer(workspace, "[audio transcript]\nhow long is the warranty\n[/audio transcript]")]
    refused = tmp_path / "refused.jsonl"
    code, _, err = run_cli(["-w", workspace.root, "generate", "--model", "plain", "-i", rows, "-o", refused], capsys)
    assert code == 2 and f"{rows}:2: field 'messages[0].content[0]'" in " ".join(err.split())
    assert "reads text only" in err and not refused.exists()
    (tmp_path / "clip.wav").write_bytes(b"RIFF not audio")
    code, _, err = run_cli(["-w", workspace.root, "generate", "--model", "reader", "-i", rows, "-o", refused], capsys)
    assert code == 2 and f"{rows}:3: field 'messages[0].content[0]" in " ".join(err.split()) and not refused.exists()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing (scripts/ensure-espeak.sh installs it)")
def test_a_spoken_answer_is_the_text_answer_as_speech_in_openais_shape(server, tmp_path):
    """modalities ["text", "audio"]: the answer's words in message.audio.transcript (content null, as
    OpenAI answers), and base64 WAV of them; the words are the text answer to the same request."""
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    asked = [{"role": "user", "content": "hello there"}]
    text = client.chat.completions.create(model="reader", max_tokens=12, messages=asked).choices[0].message.content
    reply = client.chat.completions.create(model="reader", max_tokens=12, messages=asked, modalities=["text", "audio"],
                                           audio={"voice": "alloy", "format": "wav"})
    message = reply.choices[0].message
    assert message.content is None and message.audio.transcript == text and message.audio.id.startswith("audio_")
    with wave.open(io.BytesIO(base64.b64decode(message.audio.data))) as clip:
        assert clip.getnchannels() == 1 and clip.getsampwidth() == 2
        spoken = clip.readframes(clip.getnframes())
    # The same words through espeak-ng's own command line (alloy is its en-us+f3 voice) give these samples.
    reference = tmp_path / "reference.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+f3", "-s", "165", "-w", str(reference), "--stdin"],
                   input=text.encode(), check=True, capture_output=True)
    with wave.open(str(reference)) as clip:
        assert spoken == clip.readframes(clip.getnframes()) and len(spoken) > 0


@pytest.mark.parametrize("extra, param, message", [
    ({"modalities": ["text", "audio"]}, "audio", "needs the 'audio' parameter"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "robot", "format": "wav"}}, "audio.voice", "voice 'robot'"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "mp3"}}, "audio.format", "'mp3'"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}, "stream": True}, "stream",
     "returned whole"),
    ({"modalities": ["video"]}, "modalities", "'video' is not offered"),
])
def test_spoken_answers_it_cannot_give_are_a_400_naming_the_field(server, extra, param, message):
    url, _ = server
    response = httpx.post(url + "/v1/chat/completions", timeout=60, json={
        "model": "reader", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **extra})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing (scripts/ensure-espeak.sh installs it)")
def test_the_speech_says_the_words_as_the_projects_own_transcriber_hears_them(tmp_path):
    """An independent check of what is spoken: Whisper (the align stage's engine) hears the sentence."""
    from tunewright.align import align
    from tunewright.serve.speech import speak

    sentence = "Standard shipping is free on orders over seventy five dollars."
    path = tmp_path / "answer.wav"
    path.write_bytes(speak(sentence, "echo"))
    heard = align(path, "asr", tmp_path / "cache", {}).result.text.lower()
    for word in ("shipping", "free", "orders", "75"):
        assert word in heard, heard
