"""The job: the one resource every AI call becomes; the database is its source of truth."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.util import identity_key

from models.base import Base, utcnow

JOB_KINDS = (
    "transcription", "story", "illustration", "story_batch", "narration", "film", "render",
    "narrator_clip",
)
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "expired")
# ``expired``: its deadline passed before it started (a job stopped mid-run by its deadline ends
# ``canceled`` with reason ``deadline``).
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "expired"})
WEBHOOK_EVENTS = ("start", "progress", "completed")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_status_updated", "status", "updated_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=4)
    progress: Mapped[dict[str, Any] | None]
    input: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    usage: Mapped[dict[str, Any] | None]
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The API request that created the job (X-Request-ID), so its worker logs under the same id.
    request_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where and what to push (issue 9); ``completed`` is always sent when a webhook is set.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[Any] | None]
    # Not started by then: ``expired``; still running then: canceled with reason ``deadline``.
    deadline_at: Mapped[datetime | None] = mapped_column(index=True)
    # The long-running upstream operation this job started (a narrator clip's video
    # generation): {"id", "model", "state", "startedAt", "attempt", ...}. Written before the
    # job waits on it, so a job that resumes polls it and never starts a second one.
    upstream_operation: Mapped[dict[str, Any] | None]
    # Retention pruned input/result; the row stays as a tombstone (status, timestamps).
    data_removed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # Bumped by every UPDATE of the row, in SQL (also by Core statements: ``onupdate`` is part
    # of the compiled UPDATE): orders the copies of the job's document kept in Redis
    # (workers/job_mirror.py), so a late writer never replaces a newer one.
    version: Mapped[int] = mapped_column(
        Integer, default=1, server_default=text("1"), onupdate=text("jobs.version + 1")
    )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def loaded_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """The job if this session already holds it (no query)."""
    found = session.identity_map.get(identity_key(Job, job_id))
    return found if isinstance(found, Job) else None


# Events appended by the transaction under way, written when it commits (workers/events.py).
_PENDING_EVENTS = "lifetales.pending_events"


def append_event(session: Session, job_id: uuid.UUID, type_: str, data: dict[str, Any]) -> None:
    session.info.setdefault(_PENDING_EVENTS, []).append(
        {"job_id": job_id, "type": type_, "data": data, "created_at": utcnow()})


def pending_events(session: Session) -> list[dict[str, Any]]:
    """The events the transaction under way appends (``job_id``, ``type``, ``data``), in order."""
    pending: list[dict[str, Any]] = session.info.get(_PENDING_EVENTS) or []
    return pending


def forget_pending_events(session: Session) -> None:
    session.info.pop(_PENDING_EVENTS, None)


class JobEvent(Base):
    """What happened to a job, in order: the log SSE clients read and resume from.

    Written in the same transaction as the change it describes (an outbox), so a client that
    resumes with Last-Event-ID misses nothing, whichever process made the change.
    """

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    # INTEGER on SQLite so it aliases the rowid and autoincrements; BIGINT elsewhere.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to push to a job's webhook; its id is the ``webhook-id`` header, stable across
    the delivery's retries. Inserted with the event it announces (an outbox), sent after commit.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_job_id_created", "job_id", "created_at"),
        # The reaper's sweep for deliveries whose message was lost reads only pending ones,
        # a sliver of a table that keeps every delivery.
        Index("ix_webhook_deliveries_pending", "created_at",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))  # start | progress | completed
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    # [{"attempt": n, "statusCode": 500 | None, "error": "timeout" | None, "at": iso}, ...]
    attempt_log: Mapped[list[Any] | None]
    payload: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    next_attempt_at: Mapped[datetime | None]
