"""Narrator clips: a photo and a script become a short talking video.

The Gemini narrator starts a long-running upstream operation (``start``), which is polled by id
(``poll``) until it has finished, then fetched (``fetch``); the offline one makes the clip
locally (ffmpeg, espeak-ng) when it starts. Both hand back the clip, its poster and its facts
(``GeneratedClip``). No Flask, Celery or database here.
"""

from agents.narrator.gemini import GeminiClipMaker
from agents.narrator.offline import OfflineClipMaker
from agents.narrator.types import (
    ASPECT_RATIOS,
    MAX_SCRIPT_CHARS,
    ClipFailed,
    ClipPending,
    ClipRequest,
    FinishedClip,
    GeneratedClip,
    StartedClip,
)

__all__ = [
    "ASPECT_RATIOS",
    "MAX_SCRIPT_CHARS",
    "ClipFailed",
    "ClipPending",
    "ClipRequest",
    "FinishedClip",
    "GeminiClipMaker",
    "GeneratedClip",
    "OfflineClipMaker",
    "StartedClip",
]
