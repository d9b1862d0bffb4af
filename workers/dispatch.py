"""Creating jobs, whose Celery messages are sent only after the creating transaction commits
(``workers.sending``).

With ``workers.sending``, the only part of ``workers`` the API imports.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

import telemetry
from models import Job
from models.base import utcnow
from workers.events import status_event
from workers.job_mirror import touch
from workers.sending import enqueue_task_after_commit, send_task_message

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


def send_job_message(
    job_id: uuid.UUID, kind: str, queue: str, *, countdown: float | None = None
) -> bool:
    """Publish one job's message; on broker trouble log and return False (the reaper re-sends)."""
    return send_task_message(TASKS[kind][0], queue, [str(job_id)], countdown=countdown)
