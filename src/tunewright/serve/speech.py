"""Spoken answers: a chat request with ``modalities: ["text", "audio"]`` gets its answer as speech too.

The response has OpenAI's shape (``message.audio``: base64 WAV, its transcript, an id and an expiry).
Speech comes from espeak-ng, the synthesiser the demo's spoken questions already use: it runs
offline on a CPU in milliseconds per sentence and ships in Debian. It sounds robotic; a neural
voice would need model weights this project cannot download, so espeak-ng is the honest choice
here. OpenAI's voice names map to espeak-ng voice variants so clients need not change.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from .protocol import ApiError

# OpenAI's voice names -> espeak-ng voices (language + variant).
VOICES = {"alloy": "en-us+f3", "ash": "en-us+m3", "ballad": "en-gb+m2", "coral": "en-us+f2", "echo": "en-us+m1",
          "fable": "en-gb+f2", "nova": "en-us+f4", "onyx": "en-us+m4", "sage": "en-gb+f3", "shimmer": "en-us+f1",
          "verse": "en-us+m2"}
FORMATS = ("wav",)  # what espeak-ng writes; other encodings would need an encoder on the server
WORDS_PER_MINUTE = 165
MAX_CHARS = 4000  # about four minutes of speech: longer answers are not what a voice reply is for


def wants_audio(modalities: list[str] | None, audio: dict[str, Any] | None, *, stream: bool) -> dict[str, str] | None:
    """The voice and format a request asks for, or None when it asks for text only; a 400 naming the
    field for anything this server cannot do, before any generation starts."""
    modalities = modalities or ["text"]
    unknown = [m for m in modalities if m not in ("text", "audio")]
    if unknown:
        raise ApiError(400, f"modality {unknown[0]!r} is not offered; use 'text' and 'audio'", param="modalities")
    if "audio" not in modalities:
        return None
    if stream:
        raise ApiError(400, "spoken answers are returned whole; send stream: false with audio output", param="stream")
    if not isinstance(audio, dict):
        raise ApiError(400, "audio output needs the 'audio' parameter: {\"voice\": ..., \"format\": \"wav\"}",
                       param="audio")
    voice, fmt = audio.get("voice"), audio.get("format")
    if voice not in VOICES:
        raise ApiError(400, f"voice {voice!r} is not offered; use one of {', '.join(VOICES)}", param="audio.voice")
    if fmt not in FORMATS:
        raise ApiError(400, f"audio format {fmt!r} is not offered; use {', '.join(FORMATS)}", param="audio.format")
    if shutil.which("espeak-ng") is None:
        raise ApiError(501, "spoken answers need espeak-ng on the server (apt-get install espeak-ng)",
                       type="server_error", param="modalities")
    return {"voice": voice, "format": fmt}


def speak(text: str, voice: str) -> bytes:
    """``text`` spoken in the OpenAI ``voice``, as WAV bytes (espeak-ng, 22,050 Hz mono)."""
    if not text.strip():
        return _silence()
    # The text goes in on stdin, never in argv: an answer starting with "-" must not read as an option.
    done = subprocess.run(["espeak-ng", "-v", VOICES[voice], "-s", str(WORDS_PER_MINUTE), "--stdin", "--stdout"],
                          input=text[:MAX_CHARS].encode("utf-8"), capture_output=True, timeout=120)
    if done.returncode != 0 or not done.stdout.startswith(b"RIFF"):
        raise ApiError(500, f"speech synthesis failed: {done.stderr.decode(errors='replace').strip()[:200]}",
                       type="server_error")
    return _fixed_sizes(done.stdout)


def _fixed_sizes(wav: bytes) -> bytes:
    """espeak-ng writing to a pipe cannot go back to fill in the RIFF and data sizes (it leaves
    placeholders near 0x7FFFFFFF there); readers such as Python's ``wave`` need them, so they are set from
    the length."""
    data_at = wav.find(b"data")
    if data_at < 0:
        return wav
    body = len(wav) - (data_at + 8)
    return (wav[:4] + (len(wav) - 8).to_bytes(4, "little") + wav[8:data_at + 4] + body.to_bytes(4, "little")
            + wav[data_at + 8:])


def _silence() -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(b"\x00\x00" * 2205)
    return buffer.getvalue()
