"""What a finished clip is: its length, frame and sound read by ffmpeg, and a poster frame.

ffmpeg runs boxed as for films (``agents.film.ffmpeg.run_ffmpeg``: its own process group,
memory and file-size limits, file protocol only) and reads a copy staged by its magic number,
so a generated file that is not the MP4 it claims to be is refused, never guessed at.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from agents.film.ffmpeg import ffmpeg_info, run_ffmpeg
from agents.film.inputs import parse_clip_info, rejected, stage_media
from agents.film.types import RenderLimits
from agents.narrator.types import GeneratedClip
from agents.types import Usage

# Probing a clip and taking its poster frame are quick; ffmpeg gets this long for each.
PROBE_SECONDS = 30.0
LIMITS = RenderLimits(wall_seconds=PROBE_SECONDS, memory_bytes=1024**3,
                      max_output_bytes=64 * 1024 * 1024)
WHAT = "The generated clip"
POSTER_AT_S = 1.0


def _poster(ffmpeg: str, scratch: Path, staged: str, at: float) -> list[str]:
    """Write ``poster.jpg`` from the frame at ``at`` seconds; ffmpeg's report on the input
    comes back with it (one run reads the clip's facts and takes the poster)."""
    return run_ffmpeg(ffmpeg, [
        "-nostats", "-ss", f"{at:.3f}", "-protocol_whitelist", "file", "-f", "mov",
        "-i", staged, "-frames:v", "1", "-q:v", "3", "-update", "1", "-f", "image2",
        "-y", "poster.jpg",
    ], cwd=scratch, limits=LIMITS, loglevel="info", check=False)


def finish_clip(video: Path, usage: Usage, *, max_bytes: int) -> GeneratedClip:
    """Check the clip at ``video`` (an MP4 with a picture, at most ``max_bytes``), read its
    facts and write ``poster.jpg`` beside it. ``usage.video_seconds`` becomes its length."""
    ffmpeg = ffmpeg_info().path
    scratch = Path(tempfile.mkdtemp(prefix=".clip-", dir=video.parent))
    try:
        staged = stage_media(video, scratch, "clip", max_bytes=max_bytes, what=WHAT)
        if staged.demuxer != "mov":
            raise rejected(WHAT, "it is not an MP4 video")
        # A frame a second in (the first is often a fade from black); the first frame of a
        # clip shorter than that.
        info = parse_clip_info(_poster(ffmpeg, scratch, staged.name, POSTER_AT_S))
        if info is None or info.seconds <= 0:
            raise rejected(WHAT, "its length could not be read")
        if not info.has_video or not info.width or not info.height:
            raise rejected(WHAT, "it has no picture")
        if not (scratch / "poster.jpg").is_file():
            _poster(ffmpeg, scratch, staged.name, 0.0)
        if not (scratch / "poster.jpg").is_file():
            raise rejected(WHAT, "no frame of it could be read")
        poster = video.with_name("poster.jpg")
        shutil.move(scratch / "poster.jpg", poster)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = round(info.seconds, 2)
    return GeneratedClip(
        video=video, poster=poster, mime_type="video/mp4", duration_seconds=seconds,
        width=info.width, height=info.height, has_audio=info.has_audio,
        usage=replace(usage, video_seconds=seconds),
    )
