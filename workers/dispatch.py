"""Creating jobs and sending their Celery messages only after the creating transaction commits.

This is the only part of ``workers`` the API imports.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

import telemetry
from models import Job
from models.base import utcnow
from workers.events import status_event
from workers.job_mirror import touch

log = logging.getLogger(__name__)

# kind -> (Celery task name, queue)
TASKS: dict[str, tuple[str, str]] = {
    "transcription": ("lifetales.transcribe_audio", "transcription"),
    "illustration": ("lifetales.generate_illustration", "illustration"),
    "story": ("lifetales.build_story", "story"),
    "story_batch": ("lifetales.run_story_batch", "batch"),
    "narration": ("lifetales.narrate_text", "speech"),
    "film": ("lifetales.make_film", "story"),
    "render": ("lifetales.render_film", "render"),
    "narrator_clip": ("lifetales.make_narrator_clip", "video"),
}

_PENDING = "lifetales.pending_tasks"


def create_job(
    session: Session,
    *,
    owner_id: uuid.UUID,
    kind: str,
    input: dict[str, Any],
    parent_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    max_attempts: int = 4,
    queue: str | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
    deadline_at: datetime | None = None,
) -> Job:
    """Add a queued job to the session; its message is sent once the session commits.

    ``webhook_url``: where its events are pushed (``completed`` always, plus ``webhook_events``);
    ``deadline_at``: not started by then it expires, running then it is canceled."""
    job = Job(
        id=uuid.uuid4(),
        owner_id=owner_id,
        kind=kind,
        queue=queue or TASKS[kind][1],
        status="queued",
        attempts=0,
        max_attempts=max_attempts,
        input=input,
        parent_id=parent_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        progress=None,
        created_at=utcnow(),
        request_id=telemetry.current_request_id(),  # the API request's, or the parent job's
        webhook_url=webhook_url,
        webhook_events=webhook_events if webhook_url else None,
        deadline_at=deadline_at,
    )
    session.add(job)
    status_event(session, job.id, "queued")
    touch(session, job.id, job)
    enqueue_after_commit(session, job)
    return job


def enqueue_after_commit(session: Session, job: Job, *, countdown: float | None = None) -> None:
    """Queue the job's message for sending when (and only if) the transaction commits."""
    enqueue_task_after_commit(session, TASKS[job.kind][0], job.queue, [str(job.id)],
                              countdown=countdown)


def enqueue_task_after_commit(
    session: Session, task_name: str, queue: str, args: list[Any], *,
    countdown: float | None = None,
) -> None:
    """Queue a task message (a job's, a webhook delivery's) for sending when (and only if)
    the transaction commits."""
    session.info.setdefault(_PENDING, []).append((task_name, queue, args, countdown))


def install_enqueue_after_commit(factory: sessionmaker[Session]) -> None:
    event.listen(factory, "after_commit", _send_pending)
    event.listen(factory, "after_rollback", _drop_pending)


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _send_pending(session: Session) -> None:
    for task_name, queue, args, countdown in session.info.pop(_PENDING, ()):
        send_task_message(task_name, queue, args, countdown=countdown)


def send_job_message(
    job_id: uuid.UUID, kind: str, queue: str, *, countdown: float | None = None
) -> bool:
    """Publish one job's message; on broker trouble log and return False (the reaper re-sends)."""
    return send_task_message(TASKS[kind][0], queue, [str(job_id)], countdown=countdown)


def send_task_message(
    task_name: str, queue: str, args: list[Any], *, countdown: float | None = None
) -> bool:
    """Publish a task message; on broker trouble log and return False (the reaper re-sends)."""
    from workers.app import celery_app

    try:
        celery_app.send_task(
            task_name, args=args, queue=queue, countdown=countdown, ignore_result=True
        )
    except Exception as exc:
        log.warning(
            "task message not sent; the reaper will re-send it",
            extra={"task": task_name, "task_args": args, "error": type(exc).__name__},
        )
        return False
    return True
