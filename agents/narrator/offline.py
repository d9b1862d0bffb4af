"""The offline narrator: a real clip made here from the photo, so the flow works with no key.

A slow zoom into the photo (ffmpeg ``zoompan``, H.264 at 720p, 24 fps) for the clip's length,
and the script spoken by espeak-ng when it is installed (else the clip has no sound). Deterministic:
the same photo and script make the same clip. Nothing is generated upstream, so ``start``
answers with the finished clip: there is nothing to wait for.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from agents.errors import AgentError
from agents.film.ffmpeg import ffmpeg_info, run_ffmpeg
from agents.film.graph import AUDIO_CODEC, KEN_BURNS_ZOOM, VIDEO_CODEC
from agents.film.types import RenderLimits
from agents.media.probe import ImageCaps, normalise_image
from agents.narrator.clip import finish_clip
from agents.narrator.types import (
    FRAME_SIZES,
    ClipFailed,
    ClipPending,
    ClipRequest,
    FinishedClip,
    GeneratedClip,
    StartedClip,
)
from agents.types import Usage

OFFLINE_MODEL = "offline"
FPS = 24
ESPEAK_TIMEOUT_S = 30.0
RENDER_LIMITS = RenderLimits(wall_seconds=120.0, memory_bytes=1536 * 1024**2,
                             max_output_bytes=256 * 1024**2)


def espeak() -> str | None:
    """The espeak-ng binary, when installed."""
    return shutil.which("espeak-ng")


def speak(text: str, target: Path) -> bool:
    """Write ``text`` spoken by espeak-ng to ``target`` (WAV); False when it is not installed
    or fails (the clip is then silent)."""
    binary = espeak()
    if binary is None:
        return False
    script = target.with_suffix(".txt")
    script.write_text(text, encoding="utf-8")
    try:
        # The text goes through a file, never the command line; no shell, a minimal env.
        done = subprocess.run(  # noqa: S603
            [binary, "-v", "en", "-s", "150", "-w", str(target), "-f", str(script)],
            capture_output=True, timeout=ESPEAK_TIMEOUT_S, check=False,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and target.is_file() and target.stat().st_size > 44


class OfflineClipMaker:
    """Makes the clip locally, right away."""

    model = OFFLINE_MODEL
    prompt_version = "offline-narrator-v1"

    def start(self, request: ClipRequest, workdir: Path) -> GeneratedClip:
        """The finished clip (and poster) in ``workdir``."""
        scratch = Path(tempfile.mkdtemp(prefix=".offline-", dir=workdir))
        try:
            width, height = FRAME_SIZES[request.aspect_ratio]
            source = scratch / "photo.bin"
            source.write_bytes(request.image)
            normalise_image(source, scratch / "photo.jpg", (width, height), ImageCaps())
            voiced = speak(request.script, scratch / "voice.wav")
            seconds = request.duration_seconds
            frames = seconds * FPS
            step = f"{KEN_BURNS_ZOOM - 1:.4f}*on/{max(1, frames - 1)}"
            args = ["-protocol_whitelist", "file", "-f", "image2", "-pattern_type", "none",
                    "-i", "photo.jpg"]
            if voiced:
                args += ["-protocol_whitelist", "file", "-f", "wav", "-i", "voice.wav"]
            args += ["-filter_complex",
                     f"[0:v]format=yuv420p,zoompan=z='1+{step}':x='(iw-iw/zoom)/2':"
                     f"y='(ih-ih/zoom)/2':d={frames}:s={width}x{height}:fps={FPS},"
                     f"setsar=1[v]" + (f";[1:a]apad=whole_dur={seconds}[a]" if voiced else ""),
                     "-map", "[v]", *(["-map", "[a]", *AUDIO_CODEC] if voiced else []),
                     *VIDEO_CODEC, "-r", str(FPS), "-frames:v", str(frames), "-t", str(seconds),
                     "-movflags", "+faststart", "-f", "mp4", "-y", "clip.mp4"]
            run_ffmpeg(ffmpeg_info().path, args, cwd=scratch, limits=RENDER_LIMITS)
            clip = workdir / "clip.mp4"
            shutil.move(scratch / "clip.mp4", clip)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return finish_clip(clip, Usage(model=OFFLINE_MODEL, calls=1),
                           max_bytes=RENDER_LIMITS.max_output_bytes)

    def poll(self, started: StartedClip) -> ClipPending | ClipFailed | FinishedClip:
        return ClipFailed(_NOTHING_TO_FOLLOW)

    def fetch(self, finished: FinishedClip, workdir: Path) -> GeneratedClip:
        raise _NOTHING_TO_FOLLOW


# An offline clip is made when it starts: there is never an operation to follow.
_NOTHING_TO_FOLLOW = AgentError("invalid_input", "An offline clip has no operation to follow; "
                                "it was made when it started.", retryable=False)
