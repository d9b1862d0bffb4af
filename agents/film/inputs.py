"""Bring a film's files into the render's scratch folder, in forms ffmpeg may safely read.

ffmpeg reads nothing but this folder: photos are re-encoded there by Pillow (probed first), and
audio and video files are copied there under plain names. Each copy is opened with the demuxer
its magic number names (never ffmpeg's own guess), so a playlist or a concat script disguised
as a sound file cannot make ffmpeg open other files.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.errors import AgentError
from agents.media.sniff import sniff_mime

# The sniffed type of a media file, and the only demuxer ffmpeg may open it with.
DEMUXER_BY_MIME: dict[str, str] = {
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/webm": "matroska",  # WebM and Matroska, audio or video
    "audio/mp4": "mov",  # the MPEG-4 container: M4A, MP4, MOV
    "audio/flac": "flac",
    "audio/aac": "aac",
    "audio/aiff": "aiff",
}
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #0:\d+.*?: (Video|Audio): ")
_FRAME_SIZE = re.compile(r"Stream #0:\d+.*?: Video: .*?, (\d{2,5})x(\d{2,5})\b")


@dataclass(frozen=True)
class StagedMedia:
    """A copy inside the scratch folder (a bare file name) and the demuxer to open it with."""

    name: str
    demuxer: str


@dataclass(frozen=True)
class ClipInfo:
    """What ``ffmpeg -i`` says of a clip: its length and which kinds of streams it has."""

    seconds: float
    has_video: bool
    has_audio: bool
    width: int = 0  # of the first video stream (0: none)
    height: int = 0


def rejected(what: str, reason: str) -> AgentError:
    return AgentError("media_rejected", f"{what} was rejected: {reason}.", retryable=False)


def stage_media(source: Path, scratch: Path, stem: str, *, max_bytes: int,
                what: str) -> StagedMedia:
    """Copy an audio or video file into ``scratch`` as ``stem.<ext>``; ``media_rejected`` if not
    a container we know or larger than ``max_bytes``."""
    try:
        size = source.stat().st_size
        with source.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise rejected(what, "it cannot be read") from exc
    if size > max_bytes:
        raise rejected(what, f"it is larger than {max_bytes} bytes")
    mime = sniff_mime(head)
    demuxer = DEMUXER_BY_MIME.get(mime or "")
    if demuxer is None:
        raise rejected(what, "it is not an audio or video format the renderer reads")
    name = f"{stem}.{demuxer}"
    shutil.copyfile(source, scratch / name)
    return StagedMedia(name, demuxer)


def parse_clip_info(stderr: list[str]) -> ClipInfo | None:
    """Read the length and stream kinds from ``ffmpeg -i``'s report; None when it has none."""
    text = "\n".join(stderr)
    match = _DURATION.search(text)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    kinds = set(_STREAM.findall(text))
    size = _FRAME_SIZE.search(text)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
    return ClipInfo(int(hours) * 3600 + int(minutes) * 60 + float(seconds),
                    "Video" in kinds, "Audio" in kinds, width, height)


def clip_info(staged: StagedMedia, run: Callable[[list[str]], list[str]], what: str) -> ClipInfo:
    """Probe a staged clip with ``ffmpeg -i`` (``run`` runs ffmpeg boxed, returns stderr)."""
    info = parse_clip_info(run(["-protocol_whitelist", "file", "-f", staged.demuxer,
                                "-i", staged.name]))
    if info is None or info.seconds <= 0:
        raise rejected(what, "its length could not be read")
    return info
