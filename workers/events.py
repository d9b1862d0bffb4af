"""Job events: appended in the transaction that makes the change, announced after it commits.

The ``job_events`` table is the log (ordered ids, resumable); Redis pub/sub only wakes up the
SSE streams that follow a job, so a lost notification delays an event, never loses it.
Every transition passes here, so this is also where a job's webhook deliveries are written
(workers/webhooks.py: free for a job without a webhook), and where the jobs a transaction
changed are collected for their documents in Redis (workers/job_mirror.py): rendered from the
rows as the transaction leaves them, written after it commits, before the notification.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, cast

from sqlalchemy import Table, event, insert
from sqlalchemy.orm import Session, sessionmaker

from models import JobEvent
from models.job import append_event, forget_pending_events, pending_events
from workers import job_mirror, webhooks
from workers.job_mirror import JobMirror
from workers.job_resource import JobDocument

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "lifetales:job-events:"
# The events a transaction appends are written in one INSERT when it commits: the same rows in
# the same order as ORM objects would be, without the unit of work's Python per object.
_INSERT = insert(cast(Table, JobEvent.__table__))


def channel(job_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{job_id}"


def emit(session: Session, job_id: uuid.UUID, type_: str, data: dict[str, Any]) -> None:
    """Append an event to the job's log; it becomes visible when the transaction commits."""
    append_event(session, job_id, type_, data)
    job_mirror.changed(session, job_id)
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


def _write_events(session: Session) -> None:
    pending = pending_events(session)
    if pending:
        session.flush()  # the jobs they belong to first
        session.execute(_INSERT, pending)


# Every session that emits writes its events as it commits, whichever factory made it (the
# API's, a worker's, the CLI's, a test's): listeners on the Session class, not on a factory.
event.listen(Session, "before_commit", _write_events)
event.listen(Session, "after_commit", forget_pending_events)
event.listen(Session, "after_rollback", forget_pending_events)


class Notifier:
    """After commit: writes the changed jobs' documents to Redis, then publishes 'job changed'
    (api/job_watch.py listens), in one round trip. No Redis (embedded default): waiters poll
    and every read goes to the database."""

    def __init__(self, redis_url: str | None, mirror: JobMirror | None = None) -> None:
        self.mirror = mirror
        self._redis_url = redis_url
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None and self._redis_url:
            self._client = self.mirror.client() if self.mirror is not None else None
            if self._client is None:
                import redis

                self._client = redis.Redis.from_url(
                    self._redis_url, socket_connect_timeout=1, socket_timeout=1
                )
        return self._client

    def publish(self, job_ids: set[uuid.UUID], documents: list[JobDocument] | None = None,
                gone: set[uuid.UUID] | None = None) -> None:
        client = self.client()
        if client is None:
            return
        mirrored: list[str] = []
        try:
            pipe = client.pipeline(transaction=False)
            if self.mirror is not None:
                # Before the notifications: a woken waiter reads the new document.
                mirrored = self.mirror.queue_writes(pipe, documents or (), gone or ())
            for job_id in job_ids:
                pipe.publish(channel(job_id), "1")
            pipe.execute()
        except Exception as exc:
            if self.mirror is not None:
                self.mirror.failed(mirrored)
            log.warning("job event notification failed", extra={"error": type(exc).__name__})


def install_event_notifier(factory: sessionmaker[Session], notifier: Notifier) -> None:
    def before_commit(session: Session) -> None:
        if notifier.mirror is not None:
            job_mirror.render_changed(session)

    def after_commit(session: Session) -> None:
        changes = job_mirror.take_changes(session)
        if changes.job_ids:
            notifier.publish(changes.job_ids, changes.documents, changes.gone)

    event.listen(factory, "before_commit", before_commit)
    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_begin", lambda session, *_: job_mirror.begin(session))
    event.listen(factory, "after_rollback", job_mirror.forget_changes)
