"""Render a film: stage the files, lay out the timeline, encode (picture segments and sound,
then the mux), take a poster frame.

Everything happens in a fresh ``.render-*`` scratch folder inside ``workdir`` (left-overs of a
killed earlier attempt are swept first). The finished files are renamed into ``workdir`` only
once all of them exist, the video last, so a half-written file never looks like a result; on
failure, timeout or stop the scratch folder goes and nothing else is left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from agents.errors import AgentError
from agents.film.ffmpeg import FfmpegInfo, RenderStopped, ffmpeg_info, run_ffmpeg
from agents.film.graph import (
    RenderCommand,
    StagedFilm,
    StagedScene,
    audio_command,
    mux_arguments,
    video_segments,
)
from agents.film.inputs import StagedMedia, clip_info, stage_media
from agents.film.parallel import Run, run_all
from agents.film.subtitles import Cue, timed_cues, to_webvtt
from agents.film.timeline import TRANSITION_SECONDS, Timeline, check_film, plan_timeline
from agents.film.types import FilmInput, RenderedFilm, RenderLimits
from agents.media.probe import normalise_image

VIDEO_NAME = "film.mp4"
POSTER_NAME = "poster.jpg"
SUBTITLES_NAME = "subtitles.vtt"
PICTURES = "picture-%04d.jpg"  # the normalised photos, in the order the film shows them
_MIN_INTRO_SECONDS = 0.5
_MUX_SHARE = 0.02  # of the progress reported: the last step, copying into the MP4
_SCRATCH_PREFIX = ".render-"
_PROBE_SECONDS = 30.0  # reading a clip's header, or taking the poster frame
_STAGING_THREADS = min(4, os.cpu_count() or 1)


def _sweep(workdir: Path) -> None:
    """Remove what an earlier, killed attempt left: scratch folders and finished names."""
    for stale in workdir.glob(f"{_SCRATCH_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    for name in (VIDEO_NAME, POSTER_NAME, SUBTITLES_NAME):
        (workdir / name).unlink(missing_ok=True)


class _Render:
    """One render's scratch folder, ffmpeg and limits."""

    def __init__(self, film: FilmInput, scratch: Path, limits: RenderLimits, info: FfmpegInfo,
                 should_stop: Callable[[], bool] | None) -> None:
        self.film = film
        self.scratch = scratch
        self.limits = limits
        self.info = info
        self.should_stop = should_stop
        self.deadline = time.monotonic() + limits.wall_seconds

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise RenderStopped("the render was asked to stop")

    def probe(self, args: list[str]) -> list[str]:
        return run_ffmpeg(self.info.path, args, cwd=self.scratch, limits=self.limits,
                          wall_seconds=min(_PROBE_SECONDS, self.remaining()), loglevel="info",
                          check=False)

    def stage_intro(self) -> tuple[StagedMedia | None, float, bool]:
        if self.film.intro_clip is None:
            return None, 0.0, False
        what = "The intro clip"
        staged = stage_media(self.film.intro_clip, self.scratch, "intro",
                             max_bytes=self.limits.max_media_bytes, what=what)
        info = clip_info(staged, self.probe, what)
        if not info.has_video or info.seconds < _MIN_INTRO_SECONDS:
            raise AgentError("media_rejected",
                             f"{what} was rejected: it has no video, or less than "
                             f"{_MIN_INTRO_SECONDS} s of it.", retryable=False)
        return staged, info.seconds, info.has_audio

    def _where(self, number: int) -> str:
        return f"Scene {number + 1} (chapter {self.film.scenes[number].chapter_id})"

    def _normalise(self, number: int, source: Path, name: str) -> None:
        try:
            normalise_image(source, self.scratch / name, (self.film.width, self.film.height),
                            self.limits.image_caps)
        except AgentError as exc:
            raise AgentError(exc.code, f"{self._where(number)}: {exc.message}",
                             retryable=exc.retryable) from exc

    def stage_scenes(self, timeline: Timeline) -> tuple[StagedScene, ...]:
        """Normalise the photos each scene shows (in parallel: Pillow releases the GIL while it
        decodes and resizes), copy the narrations."""
        counts: list[int] = []
        work: list[tuple[int, Path, str]] = []
        for number, (scene, timing) in enumerate(
            zip(self.film.scenes, timeline.scenes, strict=True)
        ):
            shown = scene.images[: len(timing.clip_frames)]
            counts.append(len(shown))
            work += [(number, source, PICTURES % (len(work) + k)) for k, source in enumerate(shown)]
        with ThreadPoolExecutor(max_workers=_STAGING_THREADS) as pool:
            futures = [pool.submit(self._normalise, *item) for item in work]
            try:
                # In order, so the first failure reported is the first bad photo of the film.
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()  # no need to decode the photos after a bad one
                raise
        self.check_stop()
        staged = []
        for number, scene in enumerate(self.film.scenes):
            narration = None
            if scene.narration is not None:
                narration = stage_media(scene.narration, self.scratch, f"narration-{number:03d}",
                                        max_bytes=self.limits.max_media_bytes,
                                        what=f"{self._where(number)}: the narration")
            staged.append(StagedScene(counts[number], narration, scene.transition))
        return tuple(staged)

    def subtitles(self, timeline: Timeline) -> str | None:
        cues: list[Cue] = []
        for scene, timing in zip(self.film.scenes, timeline.scenes, strict=True):
            cues += timed_cues(scene.text, timing.voice_start, timing.voice_end)
        (self.scratch / SUBTITLES_NAME).write_text(to_webvtt(cues), encoding="utf-8")
        return SUBTITLES_NAME if cues else None

    def _runner(self, command: RenderCommand, graph_file: str, seconds: float) -> Run:
        """A run of ``command``, reporting progress over ``seconds`` of output."""

        def start(progress: Callable[[float], None], stopping: Callable[[], bool]) -> None:
            (self.scratch / graph_file).write_text(command.filter_graph, encoding="utf-8")
            run_ffmpeg(self.info.path, command.arguments(self.info.filter_graph_file(graph_file)),
                       cwd=self.scratch, limits=self.limits, wall_seconds=self.remaining(),
                       total_seconds=seconds, on_progress=progress, should_stop=stopping)

        return Run(start, weight=seconds)

    def remaining(self) -> float:
        """Seconds left of the render's wall-clock limit, over all its ffmpeg runs."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AgentError("render_timeout",
                             f"The render took longer than {self.limits.wall_seconds:.0f} s.",
                             retryable=False)
        return left

    def encode(self, staged: StagedFilm, timeline: Timeline,
               on_progress: Callable[[float], None] | None) -> str:
        """Encode the picture's segments and the sound (``parallel_runs`` at a time), then mux
        them; the MP4's name."""
        fps = timeline.fps
        segments = video_segments(staged, timeline, threads=self.limits.threads)
        sound = audio_command(staged, timeline)
        runs = [self._runner(segment, f"graph-{number:03d}.txt", segment.frames / fps)
                for number, segment in enumerate(segments)]
        # The sound is quick to make: a twentieth of the picture's weight in the progress.
        runs.append(replace(self._runner(sound, "graph-sound.txt", timeline.total_seconds),
                            weight=timeline.total_seconds / 20))
        run_all(runs, workers=self.limits.parallel_runs,
                on_progress=None if on_progress is None else (
                    lambda fraction: on_progress(fraction * (1 - _MUX_SHARE))),
                should_stop=self.should_stop)
        listing = "segments.txt"
        (self.scratch / listing).write_text(
            "".join(f"file '{segment.output}'\n" for segment in segments), encoding="utf-8")
        video = "film.part.mp4"
        run_ffmpeg(self.info.path, mux_arguments(listing, sound.output, staged.subtitles, video),
                   cwd=self.scratch, limits=self.limits, wall_seconds=self.remaining(),
                   should_stop=self.should_stop)
        if on_progress is not None:
            on_progress(1.0)
        return video

    def poster(self, video: str, timeline: Timeline) -> str:
        first = timeline.scenes[0]
        # Past the film's fade-in (or the transition from the intro), well inside the scene.
        at = timeline.seconds(first.start_frame) + min(
            TRANSITION_SECONDS + 0.7, timeline.seconds(first.frames) / 2)
        name = "poster.part.jpg"
        run_ffmpeg(self.info.path, [
            "-ss", f"{at:.3f}", "-protocol_whitelist", "file", "-f", "mov", "-i", video,
            "-frames:v", "1", "-q:v", "3", "-update", "1", "-f", "image2", "-y", name,
        ], cwd=self.scratch, limits=self.limits,
           wall_seconds=min(_PROBE_SECONDS, self.remaining()))
        return name


def render_film(
    film: FilmInput,
    workdir: Path,
    *,
    limits: RenderLimits | None = None,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    ffmpeg: FfmpegInfo | None = None,
) -> RenderedFilm:
    """Render ``film`` into ``workdir`` (``film.mp4``, ``poster.jpg``, ``subtitles.vtt``).

    Raises ``AgentError`` (``invalid_input``, ``media_rejected``, ``render_timeout``,
    ``render_failed``, ``render_unavailable``) or ``RenderStopped``.
    """
    limits = limits or RenderLimits()
    check_film(film, limits)
    info = ffmpeg or ffmpeg_info()
    workdir.mkdir(parents=True, exist_ok=True)
    _sweep(workdir)
    scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=workdir))
    try:
        render = _Render(film, scratch, limits, info, should_stop)
        intro, intro_seconds, intro_has_audio = render.stage_intro()
        timeline = plan_timeline(film, limits, intro_seconds=intro_seconds)
        render.check_stop()
        scenes = render.stage_scenes(timeline)
        music = None
        if film.music is not None:
            music = stage_media(film.music, scratch, "music", max_bytes=limits.max_media_bytes,
                                what="The music track")
        staged = StagedFilm(scenes, film.width, film.height, PICTURES, intro, intro_has_audio,
                            music, render.subtitles(timeline))
        render.check_stop()
        video = render.encode(staged, timeline, on_progress)
        poster = render.poster(video, timeline)
        os.replace(scratch / SUBTITLES_NAME, workdir / SUBTITLES_NAME)
        os.replace(scratch / poster, workdir / POSTER_NAME)
        os.replace(scratch / video, workdir / VIDEO_NAME)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return RenderedFilm(
        video=workdir / VIDEO_NAME,
        poster=workdir / POSTER_NAME,
        subtitles=workdir / SUBTITLES_NAME,
        duration_seconds=round(timeline.total_seconds, 3),
        width=film.width,
        height=film.height,
        size_bytes=(workdir / VIDEO_NAME).stat().st_size,
        scenes=timeline.spans(tuple(scene.chapter_id for scene in film.scenes)),
        has_music=music is not None,
        has_narration=any(scene.narration is not None for scene in film.scenes),
        ffmpeg_version=info.version,
    )
