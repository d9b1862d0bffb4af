"""Real media for film tests and benches: photos (Pillow), speech (espeak-ng), clips (ffmpeg)."""

from __future__ import annotations

import random
import subprocess
import wave
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

from tests.audio import need_tool, wav_tone


def photo(path: Path, size: tuple[int, int] = (1600, 1200), seed: int = 0) -> Path:
    """A busy picture (coloured discs on a tint), so the encoder has real detail to work on."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    scale = max(size) // 40 + 2
    for _ in range(250):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        w, h = rng.randrange(scale // 2, scale * 4), rng.randrange(scale // 2, scale * 4)
        draw.ellipse((x, y, x + w, y + h), fill=tuple(rng.randrange(256) for _ in range(3)))
    image.save(path, quality=90)
    return path


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as audio:
        return audio.getnframes() / audio.getframerate()


def spoken(path: Path, text: str) -> float:
    """espeak-ng speaks ``text`` into a WAV; its length in seconds."""
    subprocess.run([need_tool("espeak-ng"), "-w", str(path), text], check=True, timeout=60)
    return wav_seconds(path)


def tone(path: Path, seconds: float, frequency: float = 440.0) -> float:
    path.write_bytes(wav_tone(seconds, frequency))
    return seconds


def clip(path: Path, seconds: float, size: str = "640x480", with_audio: bool = True) -> Path:
    """A test-pattern video (H.264, with a 1 kHz tone unless told otherwise) made by ffmpeg."""
    audio = ["-f", "lavfi", "-i", f"sine=frequency=1000:duration={seconds}"] if with_audio else []
    subprocess.run(
        [need_tool("ffmpeg"), "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}", *audio,
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         *(["-c:a", "aac"] if with_audio else []), str(path)],
        check=True, timeout=60,
    )
    return path


def png_bomb(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A greyscale PNG of ``width`` x ``height`` black pixels: tiny on disk, huge decoded.

    ``rows`` compresses only that many rows (a truncated image whose header still says it all).
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + one byte per pixel
    rows_per_block = max(1, (4 * 1024 * 1024) // len(row))
    parts = []
    wanted = height if rows is None else rows
    for start in range(0, wanted, rows_per_block):
        parts.append(packer.compress(row * min(rows_per_block, wanted - start)))
    parts.append(packer.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path
