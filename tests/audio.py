"""Real audio bytes for tests: a short WAV tone made with the standard library."""

from __future__ import annotations

import io
import math
import struct
import wave


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
