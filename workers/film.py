"""A film job's life after its script: one narration child per scene, then one render child,
then the finished film. The film job waits with no worker of its own (its film is
``narrating``, then ``rendering``), and each child that finishes settles it here.

Steps, as ``progress.step`` and events of the film job: ``script`` (its own work),
``narration`` (current/total scenes narrated), ``render`` (current/total percent encoded),
``upload``, ``done``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from models import TERMINAL_STATUSES, Film, Job
from models.base import utcnow
from models.film import FILM_WAITING
from workers.cache import store
from workers.dispatch import create_job
from workers.events import emit
from workers.fanout import finish_parent, report_progress
from workers.lifecycle import affected, fail_job, stop_children

RENDER_KIND = "render"
NARRATION_KIND = "narration"
# The film's own result fields, as the API shows them (camelCase, like the frontend).
RESULT_FIELDS = ("videoUrl", "posterUrl", "subtitlesUrl", "durationSeconds", "width", "height",
                 "sizeBytes", "scenes", "hasMusic")
CACHE_AGENT = "film"


def film_of(session: Session, job_id: uuid.UUID) -> Film | None:
    return session.scalar(select(Film).where(Film.job_id == job_id))


def create_narrations(session: Session, job: Job, film: Film, scenes: list[dict[str, Any]],
                      *, attempts: int) -> int:
    """One narration child per scene (they run in parallel on the speech queue)."""
    voice = film.settings.get("voiceStyle", "storyteller")
    for index, scene in enumerate(scenes):
        create_job(
            session, owner_id=job.owner_id, kind=NARRATION_KIND, parent_id=job.id,
            input={"text": scene["narrationText"], "voiceStyle": voice,
                   "chapterId": scene["chapterId"], "sceneIndex": index},
            max_attempts=attempts, deadline_at=job.deadline_at,
        )
    film.status = "narrating"
    return len(scenes)


def _children(session: Session, parent_id: uuid.UUID, kind: str) -> list[Job]:
    return list(session.scalars(
        select(Job).where(Job.parent_id == parent_id, Job.kind == kind)
        .execution_options(populate_existing=True)
    ))


def _failed_child(children: Iterable[Job]) -> Job | None:
    """The first child that failed, by scene order (its error becomes the film's)."""
    failed = [c for c in children if c.status in ("failed", "expired")]
    return min(failed, key=lambda c: (c.input or {}).get("sceneIndex", 0), default=None)


def settle_film(session: Session, parent: Job) -> bool:
    """Advance a waiting film job after one of its children finished (or it was asked to
    stop); True when this call completed it (succeeded, failed or canceled)."""
    film = film_of(session, parent.id)
    if film is None or film.status not in FILM_WAITING:
        return False  # still writing its script: the film job settles itself after that
    kind = NARRATION_KIND if film.status == "narrating" else RENDER_KIND
    children = _children(session, parent.id, kind)
    unfinished = [c for c in children if c.status not in TERMINAL_STATUSES]
    if parent.cancel_requested:
        if unfinished:
            return False  # they stop at their next safe point, then settle the film again
        return _cancel(session, parent, film)
    failed = _failed_child(children)
    if failed is not None:
        return _fail(session, parent, film, failed)
    if unfinished:
        if kind == NARRATION_KIND:
            done = len(children) - len(unfinished)
            report_progress(session, parent.id, {"step": "narration", "current": done,
                                                 "total": len(children)})
        return False
    if any(c.status == "canceled" for c in children):
        return _cancel(session, parent, film)
    if kind == NARRATION_KIND:
        _start_render(session, parent, film)
        return False
    (render,) = children[-1:]
    return _complete(session, parent, film, render.result or {})


def _start_render(session: Session, parent: Job, film: Film) -> None:
    """Every scene is narrated: hand the film to the render queue. The last narrations can
    finish at the same moment: only the settle that moves the film on makes its render."""
    if not affected(session, update(Film).where(Film.id == film.id, Film.status == "narrating")
                    .values(status="rendering")):
        session.rollback()
        return
    create_job(session, owner_id=parent.owner_id, kind=RENDER_KIND, parent_id=parent.id,
               input={"filmId": str(film.id)}, deadline_at=parent.deadline_at,
               max_attempts=int((parent.result or {}).get("renderAttempts", 4)))
    set_committed_value(film, "status", "rendering")
    progress = {"step": "render", "current": 0, "total": 100}
    session.execute(update(Job).where(Job.id == parent.id, Job.status == "running")
                    .values(progress=progress, heartbeat_at=utcnow(), updated_at=utcnow()))
    emit(session, parent.id, "progress", progress)
    session.commit()


def film_result(film: Film) -> dict[str, Any]:
    """The finished film as its job's result and the films API show it."""
    return {
        "filmId": str(film.id), "spaceId": str(film.space_id), "version": film.version,
        "videoUrl": film.video_url, "posterUrl": film.poster_url,
        "subtitlesUrl": film.subtitles_url, "durationSeconds": film.duration_seconds,
        "width": film.width, "height": film.height, "sizeBytes": film.size_bytes,
        "scenes": film.scenes or [], "hasMusic": bool(film.has_music),
    }


def apply_render(film: Film, rendered: dict[str, Any], finished_at: datetime) -> None:
    """Fill the film from a render's (or a cached film's) result."""
    film.video_url = rendered["videoUrl"]
    film.poster_url = rendered["posterUrl"]
    film.subtitles_url = rendered["subtitlesUrl"]
    film.duration_seconds = rendered["durationSeconds"]
    film.width, film.height = rendered["width"], rendered["height"]
    film.size_bytes = rendered["sizeBytes"]
    film.scenes = rendered["scenes"]
    film.has_music = rendered["hasMusic"]
    film.status = "ready"
    film.finished_at = finished_at


def _complete(session: Session, parent: Job, film: Film, rendered: dict[str, Any]) -> bool:
    """Publish the film and finish its job in one transaction; the next identical film is
    answered from the cache."""
    apply_render(film, rendered, utcnow())
    waiting = parent.result or {}
    result = {**film_result(film), "cached": False}
    if not finish_parent(session, parent, result, 1):
        return False
    if waiting.get("cacheKey"):
        store(session, waiting["cacheKey"], {k: rendered[k] for k in RESULT_FIELDS},
              agent=CACHE_AGENT, model=str(waiting.get("model", "")),
              ttl_s=int(waiting.get("cacheTtlSeconds", 0)) or 7 * 24 * 3600)
    session.commit()
    return True


def _fail(session: Session, parent: Job, film: Film, child: Job) -> bool:
    """A narration or the render failed after its retries: the film fails with its code."""
    error = child.error or {}
    what = "the narration of scene " + str((child.input or {}).get("sceneIndex", 0) + 1) \
        if child.kind == NARRATION_KIND else "the render"
    code = str(error.get("code") or "failed")
    message = f"{what} failed: {error.get('message') or child.status}"
    if not fail_job(session, parent, code, message, retryable=False):
        session.rollback()
        return False
    film.status = "failed"
    film.finished_at = utcnow()
    stop_children(session, parent.id)
    session.commit()
    return True


def _cancel(session: Session, parent: Job, film: Film) -> bool:
    if not finish_parent(session, parent, None, 0):
        return False
    film.status = "canceled"
    film.finished_at = utcnow()
    session.commit()
    return True


def abandon_film(session: Session, job_id: uuid.UUID) -> None:
    """The film job stopped without completing: its film is never shown (in the caller's
    transaction)."""
    session.execute(
        update(Film).where(Film.job_id == job_id, Film.status.in_(("scripting", *FILM_WAITING)))
        .values(status="failed", finished_at=utcnow())
    )
