"""Job state transitions. Each one is fenced (``UPDATE ... WHERE status=? AND attempts=?``) so a
redelivered or duplicated message can never move a job twice or resurrect a finished one, and
each one appends its event to the job's log in the same transaction."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from models import Job, Story
from models.base import utcnow
from workers.events import emit, final_events, status_event
from workers.job_mirror import touch

CANCELED = {"code": "canceled", "message": "the job was canceled", "retryable": False}
# Stopped by its deadline (Cancel-After) after it had started.
DEADLINE_CANCELED = {"code": "canceled", "message": "the job ran past its deadline",
                     "retryable": False, "reason": "deadline"}
EXPIRED = {"code": "expired", "message": "the job's deadline passed before it started",
           "retryable": False}


def affected(session: Session, statement: Any) -> int:
    """Rows changed by an UPDATE/DELETE: how a fenced transition knows whether it won."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def mirror(job: Job, **values: Any) -> None:
    """Reflect a Core UPDATE on the loaded object without marking it dirty (no unfenced flush)."""
    for key, value in values.items():
        set_committed_value(job, key, value)


def waiting_on_children() -> Any:
    """SQL: the job is a story whose text is written and which now waits for its illustrations.

    Such a job has no worker (its children do the work), so it is never taken over or reaped
    as lost; a story still being written is, like any other job.
    """
    return exists().where(Story.job_id == Job.id, Story.status == "illustrating")


# Fenced transitions are Core UPDATEs of the table: the ORM-enabled form (``update(Job)``)
# costs more Python per statement, and ``mirror`` keeps the loaded object in step anyway.
JOBS = cast(Table, Job.__table__)


def _fenced(job: Job) -> Any:
    return update(JOBS).where(
        JOBS.c.id == job.id, JOBS.c.status == "running", JOBS.c.attempts == job.attempts
    )


def _apply(session: Session, job: Job, statement: Any) -> bool:
    """Run a fenced UPDATE of ``job``; False when the fence refused it. The row it returns is
    the job's document's source after commit (no second read)."""
    row = session.execute(statement.returning(*JOBS.c)).first()
    if row is None:
        return False
    mirror(job, version=row.version)
    touch(session, job.id, row)
    return True


def start_job(session: Session, job_id: uuid.UUID, *, heartbeat_timeout_s: int) -> Job | None:
    """Claim a queued job (or a running one whose worker stopped beating). None: not ours to run."""
    now = utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout_s)
    # One round trip: the claim returns the row it claimed (RETURNING), loaded fresh.
    job = session.scalars(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(Job.deadline_at.is_(None), Job.deadline_at > now),
            or_(
                Job.status == "queued",
                (Job.status == "running") & (Job.heartbeat_at < stale) & ~waiting_on_children(),
            ),
        )
        .values(
            status="running",
            attempts=Job.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            updated_at=now,
        )
        .returning(Job),
        execution_options={"populate_existing": True, "synchronize_session": False},
    ).one_or_none()
    if job is None:
        # A job canceled while queued ends here, before any work starts.
        if affected(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(True))
            .values(status="canceled", error=CANCELED, finished_at=now, updated_at=now),
        ):
            final_events(session, job_id, "canceled", error=CANCELED)
        else:
            # Its deadline passed while it waited: it ends now, no work is started.
            end_overdue(session, Job.id == job_id)
        session.commit()
        return None
    status_event(session, job_id, "running", attempt=job.attempts)
    touch(session, job_id, job)
    session.commit()
    return job


def set_progress(
    session: Session, job: Job, step: str, current: int = 0, total: int = 0
) -> bool:
    """Record progress and beat the heart; False when the job is no longer ours (stop working)."""
    now = utcnow()
    if past_deadline(job, now):
        return False  # the caller stops here and the job ends canceled (reason ``deadline``)
    progress = {"step": step, "current": current, "total": total}
    done = _apply(
        session, job, _fenced(job).values(progress=progress, heartbeat_at=now, updated_at=now)
    )
    if done:
        mirror(job, progress=progress)
        emit(session, job.id, "progress", progress)
    return bool(done)


def succeed_job(
    session: Session,
    job: Job,
    result: dict[str, Any],
    *,
    usage: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> bool:
    """Finish successfully; call in the same transaction as the job's domain writes.

    False (roll back) when the job is no longer ours or was asked to stop meanwhile."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": "succeeded",
        "result": result,
        "error": None,
        "finished_at": now,
        "heartbeat_at": now,
        "updated_at": now,
    }
    if usage is not None:
        values["usage"] = usage
    if progress is not None:
        values["progress"] = progress
    # A job asked to stop never applies its result: the caller then settles it as canceled.
    fence = _fenced(job).where(Job.cancel_requested.is_(False))
    if not _apply(session, job, fence.values(**values)):
        return False
    if progress is not None:
        emit(session, job.id, "progress", progress)
    final_events(session, job.id, "succeeded", result=result)
    return True


def fail_job(
    session: Session, job: Job, code: str, message: str, *, retryable: bool = False
) -> bool:
    now = utcnow()
    error = {"code": code, "message": message, "retryable": retryable}
    if not _apply(
        session, job,
        _fenced(job).values(
            status="failed", error=error, finished_at=now, heartbeat_at=now, updated_at=now
        ),
    ):
        return False
    final_events(session, job.id, "failed", error=error)
    return True


def cancel_running_job(session: Session, job: Job) -> bool:
    """End a running job that stopped at a safe point: on request, or past its deadline
    (then with reason ``deadline``)."""
    now = utcnow()
    error = DEADLINE_CANCELED if past_deadline(job, now) else CANCELED
    if not _apply(
        session, job,
        _fenced(job).values(status="canceled", error=error, finished_at=now, updated_at=now),
    ):
        return False
    final_events(session, job.id, "canceled", error=error)
    return True


def past_deadline(job: Job, now: datetime | None = None) -> bool:
    """Whether the job's deadline has passed (no query: the loaded row says it)."""
    return job.deadline_at is not None and job.deadline_at <= (now or utcnow())


def end_overdue(session: Session, *criteria: Any) -> list[tuple[uuid.UUID, uuid.UUID | None]]:
    """End the queued jobs matching ``criteria`` whose deadline has passed: ``expired`` if they
    never started, ``canceled`` (reason ``deadline``) if they had (waiting to be retried).
    Returns (id, parent id) of each, so parents can be advanced."""
    now = utcnow()
    ended: list[tuple[uuid.UUID, uuid.UUID | None]] = []
    for status, error, started in (("expired", EXPIRED, False),
                                   ("canceled", DEADLINE_CANCELED, True)):
        rows = session.execute(
            update(Job)
            .where(Job.status == "queued", Job.deadline_at <= now,
                   Job.started_at.is_not(None) if started else Job.started_at.is_(None),
                   *criteria)
            .values(status=status, error=error, finished_at=now, updated_at=now)
            .returning(Job.id, Job.parent_id)
            .execution_options(synchronize_session=False)
        ).all()
        for job_id, parent_id in rows:
            final_events(session, job_id, status, error=error)
            ended.append((job_id, parent_id))
    return ended


def requeue_for_retry(
    session: Session, job: Job, code: str, message: str, *, delay_s: float
) -> bool:
    """Requeue a running job after a retryable failure; its last error stays visible."""
    now = utcnow()
    error = {"code": code, "message": message, "retryable": True}
    if not _apply(
        session, job,
        _fenced(job).values(
            status="queued",
            error=error,
            heartbeat_at=None,
            enqueued_at=now + timedelta(seconds=delay_s),
            updated_at=now,
        ),
    ):
        return False
    status_event(session, job.id, "queued", error=error, retryInSeconds=round(delay_s, 1))
    return True


def requeue_waiting(
    session: Session, job: Job, *, step: str, delay_s: float,
    error: dict[str, Any] | None = None,
) -> bool:
    """Re-schedule a job that must wait (for quota, for an identical job in flight); waiting
    costs no attempt and holds no worker thread. ``error``: the upstream answer that said so."""
    now = utcnow()
    progress = {"step": step, "current": 0, "total": 0}
    values: dict[str, Any] = {
        "status": "queued",
        "attempts": Job.attempts - 1,
        "progress": progress,
        "heartbeat_at": None,
        "enqueued_at": now + timedelta(seconds=delay_s),
        "updated_at": now,
    }
    if error is not None:
        values["error"] = error
    if not _apply(session, job, _fenced(job).values(**values)):
        return False
    status_event(session, job.id, "queued", progress=progress, error=error)
    return True


def ask_to_stop(session: Session, *criteria: Any) -> None:
    """Ask the running jobs matching ``criteria`` to stop at their next safe point."""
    for job_id in session.scalars(
        update(Job)
        .where(Job.status == "running", *criteria)
        .values(cancel_requested=True, updated_at=utcnow())
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    ):
        touch(session, job_id)


def cancel_requested(session: Session, job_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel now if queued; ask a running job to stop at its next safe point; children too."""
    now = utcnow()
    ids = [job.id, *session.scalars(select(Job.id).where(Job.parent_id == job.id))]
    queued = list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(ids), Job.status == "queued")
            .values(
                status="canceled",
                cancel_requested=True,
                finished_at=now,
                updated_at=now,
                error=CANCELED,
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        )
    )
    for job_id in queued:
        final_events(session, job_id, "canceled", error=CANCELED)
    ask_to_stop(session, Job.id.in_(ids))
    session.commit()
    if job.kind == "story":
        # A story waiting on illustrations has no worker to notice the request: settle it here.
        from workers.fanout import on_child_finished

        on_child_finished(session, job.id)
    session.refresh(job)
    return job
