"""Spoken customer questions: espeak-ng speaks, sox resamples to 16 kHz mono, numpy adds room noise.

The noise is drawn from a seeded numpy generator and mixed here rather than by sox's own noise
synthesis, so a clip is the same bytes on every run; espeak-ng is deterministic for a voice and speed,
and sox runs with -R (repeatable) and -D (no dither).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunewright.errors import TunewrightError

SAMPLE_RATE = 16000
# Voice messages are recorded well below full scale; a quieter signal also costs fewer FLAC bits.
SPEECH_PEAK = 0.35
NOISE_COLOURS = {"pink": 1.0, "brown": 2.0}  # power falls as 1/f**exponent


@dataclass(frozen=True)
class Clip:
    text: str
    voice: str          # an espeak-ng voice, with +variant
    speed: int          # words per minute
    noise: str          # a key of NOISE_COLOURS
    snr_db: int         # speech RMS over noise RMS
    lead_s: float       # room noise before and after the speech
    tail_s: float
    seed: int


def tool_versions() -> dict[str, str]:
    return {name: _run([name, "--version"]).decode().strip().splitlines()[0] for name in ("espeak-ng", "sox")}


def require_tools() -> None:
    for name in ("espeak-ng", "sox"):
        if shutil.which(name) is None:
            raise TunewrightError(f"{name} is not installed; spoken questions need it "
                                  "(apt-get install -y espeak-ng sox)")


def _run(command: list[str]) -> bytes:
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise TunewrightError(f"{' '.join(command[:3])} ... failed: {reason}")
    return done.stdout


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f (pink) or 1/f^2 (brown) spectrum, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    shape = np.zeros_like(freqs)
    audible = freqs >= 40  # below 40 Hz brown noise is drift that no phone microphone records
    shape[audible] = freqs[audible] ** (-NOISE_COLOURS[colour] / 2)
    noise = np.fft.irfft(spectrum * shape, n)
    return noise / np.sqrt(np.mean(noise ** 2))


def speak(clip: Clip) -> tuple[bytes, float]:
    """FLAC bytes (16 kHz mono, 16-bit) of the clip, and its duration in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _run(["espeak-ng", "-v", clip.voice, "-s", str(clip.speed), "-w", str(folder / "voice.wav"), clip.text])
        _run(["sox", "-R", "-D", str(folder / "voice.wav"), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
              str(folder / "clean.wav")])
        with wave.open(str(folder / "clean.wav")) as fh:
            speech = np.frombuffer(fh.readframes(fh.getnframes()), "<i2").astype(np.float64) / 32768
        speech *= SPEECH_PEAK / np.max(np.abs(speech))
        loudness = np.sqrt(np.mean(speech[np.abs(speech) > 0.02 * SPEECH_PEAK] ** 2))  # speech, not its pauses
        lead, tail = int(clip.lead_s * SAMPLE_RATE), int(clip.tail_s * SAMPLE_RATE)
        voice = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
        noise = coloured_noise(len(voice), clip.noise, np.random.default_rng(clip.seed))
        mixed = voice + noise * loudness / 10 ** (clip.snr_db / 20)
        samples = np.clip(np.rint(mixed * 32767), -32768, 32767).astype("<i2")
        with wave.open(str(folder / "mixed.wav"), "wb") as fh:
            fh.setnchannels(1)
            fh.setsampwidth(2)
            fh.setframerate(SAMPLE_RATE)
            fh.writeframes(samples.tobytes())
        _run(["sox", "-R", str(folder / "mixed.wav"), "-C", "8", str(folder / "clip.flac")])
        return (folder / "clip.flac").read_bytes(), round(len(samples) / SAMPLE_RATE, 3)
