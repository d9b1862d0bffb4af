"""What a file really is: magic-number detection and declared-MIME checks for uploads."""

from __future__ import annotations

from typing import Literal

MediaKind = Literal["audio", "image"]

AUDIO_MIME_TYPES: frozenset[str] = frozenset({
    "audio/webm", "audio/ogg", "audio/mpeg", "audio/wav", "audio/mp4", "audio/aac",
    "audio/flac", "audio/aiff",
})
IMAGE_MIME_TYPES: frozenset[str] = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/heic", "image/heif",
})

# The file extension each stored type gets (local storage names files with it).
EXTENSION_BY_MIME: dict[str, str] = {
    "audio/webm": "webm",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/flac": "flac",
    "audio/aiff": "aiff",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
    # Films: what the renderer makes (never accepted as uploads).
    "video/mp4": "mp4",
    "text/vtt": "vtt",
}
MIME_BY_EXTENSION: dict[str, str] = {ext: mime for mime, ext in EXTENSION_BY_MIME.items()}
FALLBACK_EXTENSION = "bin"

_ALIASES: dict[str, str] = {
    "audio/mp3": "audio/mpeg",
    "audio/mpeg3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg",
    "audio/mpg": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-pn-wav": "audio/wav",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "audio/x-mp4": "audio/mp4",
    "audio/x-aac": "audio/aac",
    "audio/aacp": "audio/aac",
    "audio/x-flac": "audio/flac",
    "audio/x-aiff": "audio/aiff",
    "audio/aif": "audio/aiff",
    "audio/x-aifc": "audio/aiff",
    "audio/aifc": "audio/aiff",
    "audio/opus": "audio/ogg",
    "audio/vorbis": "audio/ogg",
    "application/ogg": "audio/ogg",
    "audio/x-matroska": "audio/webm",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/heic-sequence": "image/heic",
    "image/heif-sequence": "image/heif",
}
# Browsers' MediaRecorder often labels audio-only recordings with a video/* container type.
_VIDEO_AS_AUDIO: dict[str, str] = {
    "video/webm": "audio/webm",
    "video/x-matroska": "audio/webm",
    "video/ogg": "audio/ogg",
    "video/mp4": "audio/mp4",
    "video/quicktime": "audio/mp4",
}
# Types that share a container, so a sniffed value and a declared one may differ yet agree.
_FAMILIES: tuple[frozenset[str], ...] = (frozenset({"image/heic", "image/heif"}),)

_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"heif"})


def sniff_mime(data: bytes) -> str | None:
    """The MIME type the bytes' magic number says, or None when it is none we know."""
    head = data[:16]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "audio/webm"  # EBML: WebM or Matroska, which the audio pipeline treats alike
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        if head[8:12] == b"WAVE":
            return "audio/wav"
        if head[8:12] == b"WEBP":
            return "image/webp"
        return None
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head[4:8] == b"ftyp" and len(head) >= 12:
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return "image/heic"
        if brand in _HEIF_BRANDS:
            return "image/heif"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        return "audio/mp4"  # M4A, isom, mp42, 3gp...: the MPEG-4 container
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if len(head) >= 2 and head[0] == 0xFF:
        second = head[1]
        if second & 0xF6 == 0xF0:
            return "audio/aac"  # ADTS: 12 sync bits, then layer 00 (FFF1 / FFF9)
        layer = (second >> 1) & 0x03
        version = (second >> 3) & 0x03
        if second & 0xE0 == 0xE0 and layer != 0 and version != 1:
            return "audio/mpeg"  # MPEG audio frame sync without an ID3 tag
    return None


def normalize_mime(declared: str, kind: MediaKind | None = None) -> str:
    """Lowercase, drop parameters (`;codecs=opus`) and map aliases to one canonical type."""
    mime = declared.split(";", 1)[0].strip().lower()
    mime = _ALIASES.get(mime, mime)
    if kind == "audio":
        mime = _VIDEO_AS_AUDIO.get(mime, mime)
    return mime


def extension_for(mime_type: str) -> str:
    """The file extension stored files of this type get (`bin` for unknown types)."""
    return EXTENSION_BY_MIME.get(normalize_mime(mime_type), FALLBACK_EXTENSION)


def check_declared_matches(declared: str, data: bytes, kind: MediaKind) -> str:
    """The canonical MIME type of an upload whose declared type agrees with its content.

    Raises ValueError with a message fit for the client otherwise.
    """
    allowed = AUDIO_MIME_TYPES if kind == "audio" else IMAGE_MIME_TYPES
    allowed_text = ", ".join(sorted(allowed))
    normalized = normalize_mime(declared, kind)
    if normalized not in allowed:
        raise ValueError(
            f"mimeType {declared.strip() or '(empty)'} is not a supported {kind} format; "
            f"allowed: {allowed_text}"
        )
    if not data:
        raise ValueError("file is empty")
    sniffed = sniff_mime(data)
    if sniffed is None or sniffed not in allowed:
        looks_like = f" (looks like {sniffed})" if sniffed else ""
        raise ValueError(
            f"file is not a supported {kind} format{looks_like}; allowed: {allowed_text}"
        )
    if sniffed != normalized and not _same_family(sniffed, normalized):
        raise ValueError(
            f"mimeType {normalized} does not match the file's content (looks like {sniffed})"
        )
    return sniffed


def _same_family(a: str, b: str) -> bool:
    return any(a in family and b in family for family in _FAMILIES)
