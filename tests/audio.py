"""Real audio bytes for tests: a short WAV tone made with the standard library."""

from __future__ import annotations

import io
import math
import struct
import wave
from pathlib import Path


def wav_tone(seconds: float = 0.5, frequency: float = 440.0, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = int(seconds * rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * i / rate)))
                for i in range(frames)
            )
        )
    return buffer.getvalue()


def need_tool(name: str) -> str:
    """Path of a tool: skipped locally when missing, a failure in CI (which installs it)."""
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI; .ci/run installs it")
        pytest.skip(f"{name} is not installed")
    return path


def spoken_audio(text: str, tmp_dir: Path, fmt: str = "webm") -> bytes:
    """A real voice note: espeak-ng speaks the text, ffmpeg encodes it as a browser would (opus)."""
    import subprocess

    wav = tmp_dir / "speech.wav"
    subprocess.run([need_tool("espeak-ng"), "-w", str(wav), text], check=True, timeout=60)
    if fmt == "wav":
        return wav.read_bytes()
    out = tmp_dir / f"speech.{fmt}"
    codec = ["-c:a", "libopus"] if fmt in {"webm", "ogg"} else []
    subprocess.run([need_tool("ffmpeg"), "-loglevel", "error", "-y", "-i", str(wav), *codec,
                    str(out)], check=True, timeout=60)
    return out.read_bytes()
