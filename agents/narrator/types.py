"""The narrator's contract: a photo and a script in, a short talking clip out, made by a
long-running upstream operation that is started once and then polled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agents.errors import AgentError
from agents.types import Usage

ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16")
MAX_SCRIPT_CHARS = 1000
# The frame a clip is made at (and asked for upstream): 720p in either orientation.
RESOLUTION = "720p"
FRAME_SIZES: dict[str, tuple[int, int]] = {"16:9": (1280, 720), "9:16": (720, 1280)}


@dataclass(frozen=True)
class ClipRequest:
    """What one clip is made of."""

    image: bytes
    image_mime: str
    script: str
    duration_seconds: int
    aspect_ratio: str = "16:9"


@dataclass(frozen=True)
class StartedClip:
    """An upstream operation making a clip: what to poll, and which model runs it."""

    operation_id: str
    model: str


@dataclass(frozen=True)
class ClipPending:
    """Still generating; ``state`` is the upstream's word for it (``in_progress``...)."""

    state: str


@dataclass(frozen=True)
class ClipFailed:
    """The operation ended without a clip (filtered, or failed upstream): nothing to pay for.
    ``error`` says why, with the usual codes (``blocked`` with the filter's reasons)."""

    error: AgentError


@dataclass(frozen=True)
class FinishedClip:
    """The operation finished with a clip, not fetched yet: inline base64 ``data`` or a
    ``uri`` to download. The generation is done (and billed) from here on."""

    operation_id: str
    model: str
    usage: Usage
    data: str | bytes | None = None
    uri: str | None = None


@dataclass(frozen=True)
class GeneratedClip:
    """The finished clip and its poster, both inside the caller's work folder."""

    video: Path  # MP4 as the model made it
    poster: Path  # JPEG frame of it
    mime_type: str
    duration_seconds: float
    width: int
    height: int
    has_audio: bool
    usage: Usage  # ``video_seconds``: the clip's real length, what a video model bills
