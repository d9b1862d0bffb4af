"""The renderer's contract: what a film is made of, the limits it runs under, what comes out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agents.media.probe import ImageCaps

# The script's transitions, and the xfade effect each one is drawn with.
XFADE_BY_TRANSITION: dict[str, str] = {"fade": "fade", "slide": "slideleft", "zoom": "zoomin"}
TRANSITIONS: tuple[str, ...] = tuple(XFADE_BY_TRANSITION)


@dataclass(frozen=True)
class SceneInput:
    """One chapter's scene: its pictures, its spoken narration and the words for subtitles."""

    chapter_id: str
    # In order: the user's photos first, else the chapter's illustrations; may be empty.
    images: tuple[Path, ...]
    narration: Path | None  # any audio ffmpeg reads (wav, mp3, ogg...); None = a silent scene
    narration_seconds: float  # its duration; for a silent scene, how long to show it
    text: str  # the narration text: the scene's subtitles
    transition: str = "fade"  # how this scene is entered: "fade" | "slide" | "zoom"


@dataclass(frozen=True)
class FilmInput:
    """A whole film: scenes in order, an optional intro clip and music bed, the frame."""

    scenes: tuple[SceneInput, ...]
    intro_clip: Path | None = None  # plays first, with its own sound, scaled/padded to the frame
    music: Path | None = None  # looped under the whole film, ducked under the voice
    width: int = 1280
    height: int = 720
    fps: int = 30


@dataclass(frozen=True)
class RenderLimits:
    """Bounds of one render: time, memory and size of the ffmpeg child, and of the film itself."""

    wall_seconds: float = 900.0  # the ffmpeg run, killed past it (``render_timeout``)
    memory_bytes: int = 2 * 1024**3  # RLIMIT_AS of the ffmpeg child (address space, not RSS)
    max_output_bytes: int = 2 * 1024**3  # RLIMIT_FSIZE: no file the child writes grows past it
    max_scenes: int = 60
    max_film_seconds: float = 900.0  # 15 minutes, intro included
    max_images_per_scene: int = 6
    max_media_bytes: int = 200 * 1024 * 1024  # one narration, intro clip or music file
    image_caps: ImageCaps = field(default_factory=ImageCaps)
    threads: int = 0  # encoder threads per run; 0 lets x264 choose (about 1.5 per core)
    # ffmpeg runs at once (segments of the picture, the sound): two keep both cores of a small
    # machine busy, as a run's filters use one thread while its encoder waits for frames.
    parallel_runs: int = 2


@dataclass(frozen=True)
class SceneSpan:
    """Where a scene sits in the finished film, in seconds."""

    chapter_id: str
    start_seconds: float
    end_seconds: float


@dataclass(frozen=True)
class RenderedFilm:
    """The finished files, all inside the render's workdir, and the facts the job reports."""

    video: Path  # MP4: H.264 + AAC (+ mov_text subtitles), yuv420p, +faststart
    poster: Path  # JPEG: a frame from the first scene
    subtitles: Path  # WebVTT, the same cues as the MP4's subtitle track
    duration_seconds: float
    width: int
    height: int
    size_bytes: int
    scenes: tuple[SceneSpan, ...]
    has_music: bool
    has_narration: bool
    ffmpeg_version: str = ""
