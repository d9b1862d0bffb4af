"""The film renderer: ready files (pictures, narrations, music, an intro clip) in, an MP4 out.

A pure agent: no Flask, Celery, database or network. The worker calls::

    settings = FilmSettings.from_env(os.environ)  # FFMPEG_BINARY, MUSIC_LIBRARY_DIR, limits
    film = FilmInput(
        scenes=(SceneInput(chapter_id, images, narration, narration_seconds, text, transition),
                ...),
        intro_clip=None,
        music=pick_music(settings.music_library_dir, mood, seed=story_version_id),
    )
    rendered = render_film(film, workdir, limits=settings.limits,
                           ffmpeg=ffmpeg_info(settings.ffmpeg_binary),
                           on_progress=lambda fraction: ..., should_stop=lambda: canceled)

and gets a ``RenderedFilm``: ``video`` (MP4, H.264 + AAC + mov_text subtitles, yuv420p,
``+faststart``), ``poster`` (JPEG), ``subtitles`` (WebVTT), all inside ``workdir``, with the
duration, frame size, file size, each scene's ``(chapter_id, start, end)`` and whether there is
music and narration. ``on_progress`` gets 0..1 of the film encoded (ffmpeg's ``out_time``);
``should_stop`` is polled about twice a second, both from the calling thread.

Failures are ``AgentError`` (never retryable): ``invalid_input`` (over ``RenderLimits``: more than
60 scenes, more than 15 minutes, bad frame or transition), ``media_rejected`` (a photo over the
caps or undecodable, an unknown audio/video format; the message names the scene),
``render_timeout`` (past ``RenderLimits.wall_seconds``), ``render_failed`` (ffmpeg exited
non-zero, the memory cap included), ``render_unavailable`` (no ffmpeg). ``RenderStopped`` when
``should_stop`` said so. In every case the ffmpeg process group is gone and no file is left.

ffmpeg runs as ``python -c <shim> ffmpeg ...``: the shim sets ``RLIMIT_AS``/``RLIMIT_FSIZE`` and
a parent-death signal, then execs ffmpeg in its own session (process group), with an argument
list, a minimal environment, ``cwd`` the scratch folder and ``-protocol_whitelist file`` on every
input. ``ffmpeg_info()`` says which binary is used (system, else the ``imageio-ffmpeg`` wheel's).
"""

from agents.film.ffmpeg import FfmpegInfo, RenderStopped, ffmpeg_info
from agents.film.music import MUSIC_MOODS, pick_music
from agents.film.render import render_film
from agents.film.settings import FilmSettings
from agents.film.types import (
    TRANSITIONS,
    FilmInput,
    RenderedFilm,
    RenderLimits,
    SceneInput,
    SceneSpan,
)
from agents.media.probe import ImageCaps, probe_image

__all__ = [
    "MUSIC_MOODS",
    "TRANSITIONS",
    "FfmpegInfo",
    "FilmInput",
    "FilmSettings",
    "ImageCaps",
    "RenderLimits",
    "RenderStopped",
    "RenderedFilm",
    "SceneInput",
    "SceneSpan",
    "ffmpeg_info",
    "pick_music",
    "probe_image",
    "render_film",
]
