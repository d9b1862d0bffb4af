"""Magic-number detection and declared-type checks, on real encoder output where we have one."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import wave
from pathlib import Path

import pytest
from PIL import Image

from agents.media.sniff import (
    AUDIO_MIME_TYPES,
    IMAGE_MIME_TYPES,
    check_declared_matches,
    extension_for,
    normalize_mime,
    sniff_mime,
)
from tests.audio import need_tool


def make_wav(seconds: float = 0.1, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
            for i in range(int(seconds * rate))
        )
        out.writeframes(frames)
    return buf.getvalue()


def make_image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 120, 40)).save(buf, fmt)
    return buf.getvalue()


# Hand-built headers for formats the standard library cannot write.
EBML_MAGIC = bytes.fromhex("1a45dfa3")
WEBM = EBML_MAGIC + bytes.fromhex("9f4286810142f7810142f2810442f381084282") + b"webm"
MATROSKA = EBML_MAGIC + bytes.fromhex("a34286810142f7810142f2810442f381084282") + b"matroska"
OGG = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13OpusHead"
MP3_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 32
MP3_FRAME = b"\xff\xfb\x90\x64" + b"\x00" * 32
MP3_MPEG2 = b"\xff\xf3\x48\xc4" + b"\x00" * 32
AAC_ADTS_MPEG4 = b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 16
AAC_ADTS_MPEG2 = b"\xff\xf9\x50\x80\x02\x1f\xfc" + b"\x00" * 16
FLAC = b"fLaC\x00\x00\x00\x22" + b"\x00" * 34
AIFF = b"FORM" + struct.pack(">I", 46) + b"AIFFCOMM" + b"\x00" * 26
AIFC = b"FORM" + struct.pack(">I", 46) + b"AIFCFVER" + b"\x00" * 26
M4A = struct.pack(">I", 28) + b"ftypM4A \x00\x00\x02\x00M4A isommp42" + b"\x00" * 8
MP4_ISOM = struct.pack(">I", 24) + b"ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 8
HEIC = struct.pack(">I", 24) + b"ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 8
HEIF = struct.pack(">I", 24) + b"ftypmif1\x00\x00\x00\x00mif1heic" + b"\x00" * 8


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (make_wav(), "audio/wav"),
        (WEBM, "audio/webm"),
        (MATROSKA, "audio/webm"),
        (OGG, "audio/ogg"),
        (MP3_ID3, "audio/mpeg"),
        (MP3_FRAME, "audio/mpeg"),
        (MP3_MPEG2, "audio/mpeg"),
        (AAC_ADTS_MPEG4, "audio/aac"),
        (AAC_ADTS_MPEG2, "audio/aac"),
        (FLAC, "audio/flac"),
        (AIFF, "audio/aiff"),
        (AIFC, "audio/aiff"),
        (M4A, "audio/mp4"),
        (MP4_ISOM, "audio/mp4"),
        (make_image("PNG"), "image/png"),
        (make_image("JPEG"), "image/jpeg"),
        (make_image("GIF"), "image/gif"),
        (make_image("WEBP"), "image/webp"),
        (HEIC, "image/heic"),
        (HEIF, "image/heif"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_sniff_recognises_each_format(data: bytes, expected: str) -> None:
    assert sniff_mime(data) == expected


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"hello world, plain text", b"RIFF\x00\x00\x00\x00AVI LIST", b"%PDF-1.7\n"],
)
def test_sniff_returns_none_for_unknown_bytes(data: bytes) -> None:
    assert sniff_mime(data) is None


def test_every_allowed_type_has_a_file_extension() -> None:
    for mime in AUDIO_MIME_TYPES | IMAGE_MIME_TYPES:
        assert extension_for(mime) != "bin", mime
    assert extension_for("audio/webm;codecs=opus") == "webm"
    assert extension_for("application/x-unknown") == "bin"


@pytest.mark.parametrize(
    ("declared", "kind", "expected"),
    [
        ("audio/webm;codecs=opus", "audio", "audio/webm"),
        ("Audio/WebM; codecs=\"opus\"", None, "audio/webm"),
        ("audio/mp3", None, "audio/mpeg"),
        ("audio/x-wav", None, "audio/wav"),
        ("audio/wave", None, "audio/wav"),
        ("audio/x-m4a", None, "audio/mp4"),
        ("audio/m4a", None, "audio/mp4"),
        ("audio/x-flac", None, "audio/flac"),
        ("audio/x-aiff", None, "audio/aiff"),
        ("image/jpg", None, "image/jpeg"),
        ("video/webm", "audio", "audio/webm"),
        ("video/mp4", "audio", "audio/mp4"),
        ("video/webm", None, "video/webm"),  # only an audio upload reinterprets video/*
        ("video/webm", "image", "video/webm"),
    ],
)
def test_normalize_mime(declared: str, kind: str | None, expected: str) -> None:
    assert normalize_mime(declared, kind) == expected  # type: ignore[arg-type]


def test_declared_type_matching_content_is_accepted() -> None:
    assert check_declared_matches("audio/x-wav", make_wav(), "audio") == "audio/wav"
    assert check_declared_matches("audio/webm;codecs=opus", WEBM, "audio") == "audio/webm"
    assert check_declared_matches("image/png", make_image("PNG"), "image") == "image/png"
    assert check_declared_matches("image/jpg", make_image("JPEG"), "image") == "image/jpeg"


@pytest.mark.parametrize(
    ("declared", "data", "expected"),
    [
        ("video/webm", WEBM, "audio/webm"),  # MediaRecorder labels audio as video/webm
        ("audio/webm", MATROSKA, "audio/webm"),
        ("audio/x-matroska", WEBM, "audio/webm"),
        ("audio/mp4", MP4_ISOM, "audio/mp4"),
        ("audio/x-m4a", M4A, "audio/mp4"),
        ("audio/opus", OGG, "audio/ogg"),
    ],
)
def test_container_families_are_tolerated_for_audio(
    declared: str, data: bytes, expected: str
) -> None:
    assert check_declared_matches(declared, data, "audio") == expected


def test_heic_and_heif_are_one_family() -> None:
    assert check_declared_matches("image/heif", HEIC, "image") == "image/heic"
    assert check_declared_matches("image/heic", HEIF, "image") == "image/heif"


def test_mismatch_names_both_types() -> None:
    with pytest.raises(ValueError) as err:
        check_declared_matches("audio/wav", OGG, "audio")
    assert str(err.value) == (
        "mimeType audio/wav does not match the file's content (looks like audio/ogg)"
    )


def test_unsupported_declared_type_lists_the_allowed_ones() -> None:
    expected = r"^mimeType audio/x-ms-wma is not a supported audio format; allowed: .*audio/webm"
    with pytest.raises(ValueError, match=expected):
        check_declared_matches("audio/x-ms-wma", make_wav(), "audio")
    with pytest.raises(ValueError, match="is not a supported image format"):
        check_declared_matches("image/svg+xml", b"<svg/>", "image")


def test_content_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not a supported audio format \(looks like image/png\)"):
        check_declared_matches("audio/mpeg", make_image("PNG"), "audio")
    with pytest.raises(ValueError, match=r"not a supported image format \(looks like audio/wav\)"):
        check_declared_matches("image/png", make_wav(), "image")
    avif = struct.pack(">I", 24) + b"ftypavif" + b"\x00" * 12
    with pytest.raises(ValueError, match=r"not a supported image format \(looks like image/avif\)"):
        check_declared_matches("image/png", avif, "image")


def test_unrecognisable_and_empty_content_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^file is not a supported audio format; allowed: "):
        check_declared_matches("audio/mpeg", b"definitely not audio", "audio")
    with pytest.raises(ValueError, match=r"^file is empty$"):
        check_declared_matches("audio/mpeg", b"", "audio")


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [("webm", "audio/webm"), ("ogg", "audio/ogg"), ("mp3", "audio/mpeg"),
     ("m4a", "audio/mp4"), ("flac", "audio/flac"), ("aiff", "audio/aiff"), ("aac", "audio/aac")],
)
def test_real_encoder_output(tmp_path: Path, suffix: str, expected: str) -> None:
    out = tmp_path / f"tone.{suffix}"
    ffmpeg = need_tool("ffmpeg")
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.2",
         "-vn", str(out)],
        check=True,
        timeout=60,
    )
    data = out.read_bytes()
    assert sniff_mime(data) == expected
    assert check_declared_matches(expected, data, "audio") == expected
