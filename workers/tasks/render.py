"""Render a film (the ``render`` queue: CPU-bound, one at a time per worker process by default)
and upload it: fetch its pictures and narrations into a private temporary folder, run the
renderer (ffmpeg), store the MP4, poster and subtitles keyed by the film job, so a retried or
re-queued render overwrites rather than duplicates. The film completes when this job does."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

import telemetry
from agents.errors import AgentError
from agents.film import (
    FilmInput,
    RenderStopped,
    SceneInput,
    ffmpeg_info,
    pick_music,
    probe_image,
    render_film,
)
from agents.media.sniff import extension_for
from models import Film, Job, Media, Story
from workers import lifecycle
from workers.app import celery_app
from workers.attempt import JobCanceled, JobFailed, JobRun
from workers.fanout import report_progress
from workers.runner import run_job

log = logging.getLogger(__name__)

# Stored files are found again from their URLs: every key holds its job's id.
_ILLUSTRATION_KEY = re.compile(r"illustrations/[0-9a-f-]{36}")
_NARRATION_KEY = re.compile(r"narrations/[0-9a-f-]{36}")
PROGRESS_EVERY_S = 1.0  # at most one progress write a second while ffmpeg encodes
STOP_CHECK_EVERY_S = 1.0


def film_keys(film_job_id: uuid.UUID) -> dict[str, str]:
    """Where a film's files are stored: by the film job, so a second render overwrites."""
    return {name: f"films/{film_job_id}/{name}" for name in ("video", "poster", "subtitles")}


class RenderRun:
    """One render attempt: its own scratch folder, progress on itself and on the film job."""

    def __init__(self, run: JobRun, film: Film, parent: Job) -> None:
        self.run, self.film, self.parent = run, film, parent
        self.session = run.session
        self.storage = run.context.storage
        self.rejected: list[dict[str, Any]] = []
        self._last_progress = 0.0
        self._last_stop_check = 0.0
        self._stop = False

    def fetch(self, key: str, name: str, workdir: Path) -> Path:
        path = workdir / name
        path.write_bytes(self.storage.read(key))
        return path

    def scene_images(self, chapter: Any, index: int, workdir: Path) -> tuple[Path, ...]:
        """The user's photos first, else the chapter's illustrations; a photo that fails the
        probe (too large, a decompression bomb, not an image) is left out and reported."""
        images: list[Path] = []
        photos = [uuid.UUID(str(i)) for i in chapter.user_image_ids or []]
        media = {m.id: m for m in self.session.scalars(select(Media).where(Media.id.in_(photos)))
                 } if photos else {}
        keys = [(media[i].storage_key, media[i].mime_type) for i in photos
                if i in media and media[i].removed_at is None]
        if not keys:
            urls = chapter.generated_image_urls or [chapter.generated_image_url]
            keys = [(m.group(0), "image/png") for url in urls if url
                    for m in [_ILLUSTRATION_KEY.search(url)] if m]
        caps = self.run.context.settings.film.render.limits.image_caps
        for number, (key, mime) in enumerate(keys):
            path = self.fetch(key, f"scene{index}-{number}.{extension_for(mime)}", workdir)
            try:
                probe_image(path, caps)
            except AgentError as exc:
                path.unlink(missing_ok=True)
                self.rejected.append({"chapterId": str(chapter.id), "code": exc.code,
                                      "message": exc.message})
                continue
            images.append(path)
        return tuple(images)

    def narrations(self) -> dict[int, dict[str, Any]]:
        children = self.session.scalars(select(Job).where(
            Job.parent_id == self.parent.id, Job.kind == "narration", Job.status == "succeeded"))
        return {int(c.input["sceneIndex"]): c.result or {} for c in children}

    def film_input(self, workdir: Path) -> FilmInput:
        story = self.session.get(Story, self.film.story_id)
        if story is None or self.film.script is None:
            raise JobFailed("not_found", "the film's story version no longer exists")
        chapters = {str(c.id): c for c in story.chapters}
        spoken = self.narrations()
        scenes = []
        for index, scene in enumerate(self.film.script["scenes"]):
            chapter = chapters.get(scene["chapterId"])
            if chapter is None:
                raise JobFailed("not_found", "a chapter of the film's story no longer exists")
            narration = spoken.get(index, {})
            key = _NARRATION_KEY.search(str(narration.get("audioUrl", "")))
            if key is None:
                raise JobFailed("narration_missing", f"scene {index + 1} has no narration")
            scenes.append(SceneInput(
                chapter_id=scene["chapterId"],
                images=self.scene_images(chapter, index, workdir),
                narration=self.fetch(key.group(0), f"narration{index}.wav", workdir),
                narration_seconds=float(narration.get("durationSeconds") or 0.0),
                text=scene["narrationText"],
                transition=scene["transition"],
            ))
        music = None
        if self.film.settings.get("backgroundMusic"):
            track = pick_music(self.run.context.settings.film.render.music_library_dir,
                               self.film.script["musicMood"], seed=str(self.film.id))
            if track is not None:
                music = workdir / f"music{track.suffix}"
                shutil.copyfile(track, music)
        intro_key = self.parent.input.get("introClipKey")  # a narrator clip opens the film
        intro = self.fetch(intro_key, "intro.mp4", workdir) if intro_key else None
        return FilmInput(scenes=tuple(scenes), music=music, intro_clip=intro)

    def on_progress(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S and fraction < 1:
            return
        self._last_progress = now
        self.step("render", round(fraction * 100))

    def step(self, step: str, percent: int) -> None:
        """Progress on the render job and the film job it works for, in one commit."""
        self.run.progress(step, percent, 100, commit=False)
        report_progress(self.session, self.parent.id,
                        {"step": step, "current": percent, "total": 100})  # commits both

    def should_stop(self) -> bool:
        """Canceled, or past its deadline (checked at most once a second)."""
        now = time.monotonic()
        if not self._stop and now - self._last_stop_check >= STOP_CHECK_EVERY_S:
            self._last_stop_check = now
            self._stop = lifecycle.past_deadline(self.run.job) or lifecycle.cancel_requested(
                self.session, self.run.job.id)
            self.session.commit()  # no transaction held open while ffmpeg runs
        return self._stop

    def upload(self, rendered: Any) -> dict[str, Any]:
        keys = film_keys(self.parent.id)
        video = self.storage.save(keys["video"], rendered.video.read_bytes(), "video/mp4")
        poster = self.storage.save(keys["poster"], rendered.poster.read_bytes(), "image/jpeg")
        subtitles = self.storage.save(keys["subtitles"], rendered.subtitles.read_bytes(),
                                      "text/vtt")
        return {
            "videoUrl": video.url, "posterUrl": poster.url, "subtitlesUrl": subtitles.url,
            "durationSeconds": rendered.duration_seconds, "width": rendered.width,
            "height": rendered.height, "sizeBytes": rendered.size_bytes,
            "scenes": [{"chapterId": s.chapter_id, "startSeconds": s.start_seconds,
                        "endSeconds": s.end_seconds} for s in rendered.scenes],
            "hasMusic": rendered.has_music,
            "mediaRejected": self.rejected,
        }


# Past celeryconfig's hard time limit of a render, a scratch folder's worker is surely gone.
STALE_WORKDIR_S = 1200
WORKDIR_PREFIX = "lifetales-render-"


def fresh_workdir(job_id: uuid.UUID) -> Path:
    """This render's private folder, emptied: a killed worker cannot clean up after itself, so
    each render removes what an earlier attempt of its job left, and any folder older than a
    render can run."""
    root = Path(tempfile.gettempdir())
    workdir = root / f"{WORKDIR_PREFIX}{job_id}"
    now = time.time()
    for folder in root.glob(f"{WORKDIR_PREFIX}*"):
        try:
            stale = now - folder.stat().st_mtime > STALE_WORKDIR_S
        except OSError:
            continue
        if folder == workdir or stale:
            shutil.rmtree(folder, ignore_errors=True)
    workdir.mkdir(mode=0o700)
    return workdir


def render(run: JobRun) -> None:
    session = run.session
    film = session.get(Film, uuid.UUID(run.job.input["filmId"]))
    parent = session.get(Job, run.job.parent_id) if run.job.parent_id else None
    if film is None or parent is None or film.status != "rendering":
        raise JobFailed("not_found", "the film is no longer waiting for its render")
    job = RenderRun(run, film, parent)
    job.step("render", 0)
    settings = run.context.settings.film.render
    workdir = fresh_workdir(run.job.id)
    started = time.monotonic()
    try:
        film_input = job.film_input(workdir)
        session.commit()  # no transaction (or row lock) held while ffmpeg runs
        rendered = render_film(film_input, workdir / "out", limits=settings.limits,
                               on_progress=job.on_progress, should_stop=job.should_stop,
                               ffmpeg=ffmpeg_info(settings.ffmpeg_binary))
        telemetry.observe_render(time.monotonic() - started, rendered.duration_seconds)
        run.check_cancel()
        job.step("upload", 0)
        result = job.upload(rendered)
    except RenderStopped:
        raise JobCanceled from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("film rendered", extra={"film_id": str(film.id), "seconds": round(
        time.monotonic() - started, 2), "film_seconds": result["durationSeconds"]})
    run.succeed(result)


@celery_app.task(name="lifetales.render_film", acks_late=True, ignore_result=True)
def render_film_task(job_id: str) -> None:
    run_job(job_id, render)
