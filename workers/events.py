"""Job events: appended in the transaction that makes the change, announced after it commits.

The ``job_events`` table is the log (ordered ids, resumable); Redis pub/sub only wakes up the
SSE streams that follow a job, so a lost notification delays an event, never loses it.
Every transition passes here, so this is also where a job's webhook deliveries are written
(workers/webhooks.py: free for a job without a webhook).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from models import JobEvent
from workers import webhooks

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "lifetales:job-events:"
_TOUCHED = "lifetales.event_jobs"


def channel(job_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{job_id}"


def emit(session: Session, job_id: uuid.UUID, type_: str, data: dict[str, Any]) -> None:
    """Append an event to the job's log; it becomes visible when the transaction commits."""
    session.add(JobEvent(job_id=job_id, type=type_, data=data))
    session.info.setdefault(_TOUCHED, set()).add(job_id)
    if type_ == "progress":
        webhooks.on_progress(session, job_id, data)


def status_event(session: Session, job_id: uuid.UUID, status: str, **extra: Any) -> None:
    emit(session, job_id, "status", {"status": status, **extra})
    if status == "running":
        webhooks.on_start(session, job_id)


def final_events(session: Session, job_id: uuid.UUID, status: str, *,
                 result: dict[str, Any] | None = None,
                 error: dict[str, Any] | None = None) -> None:
    """The events that close a job's stream: its status, an ``error`` if it failed, ``done``."""
    status_event(session, job_id, status)
    if error is not None and status == "failed":
        emit(session, job_id, "error", error)
    emit(session, job_id, "done", {"status": status, "result": result, "error": error})
    webhooks.on_completed(session, job_id)


class Notifier:
    """Publishes 'job changed' after commit (api/job_watch.py listens); no Redis (embedded
    default): waiters poll."""

    def __init__(self, redis_url: str | None) -> None:
        self._redis_url = redis_url
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None and self._redis_url:
            import redis

            self._client = redis.Redis.from_url(
                self._redis_url, socket_connect_timeout=1, socket_timeout=1
            )
        return self._client

    def publish(self, job_ids: set[uuid.UUID]) -> None:
        client = self.client()
        if client is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.publish(channel(job_id), "1")
            pipe.execute()
        except Exception as exc:
            log.warning("job event notification failed", extra={"error": type(exc).__name__})


def install_event_notifier(factory: sessionmaker[Session], notifier: Notifier) -> None:
    def after_commit(session: Session) -> None:
        touched = session.info.pop(_TOUCHED, None)
        if touched:
            notifier.publish(touched)

    def after_rollback(session: Session) -> None:
        session.info.pop(_TOUCHED, None)

    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_rollback", after_rollback)
