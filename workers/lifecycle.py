"""Job state transitions. Each one is fenced (``UPDATE ... WHERE status=? AND attempts=?``) so a
redelivered or duplicated message can never move a job twice or resurrect a finished one."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, exists, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value

from models import TERMINAL_STATUSES, Job
from models.base import utcnow


def _has_children() -> Any:
    child = aliased(Job)
    return exists().where(child.parent_id == Job.id)


def start_job(session: Session, job_id: uuid.UUID, *, heartbeat_timeout_s: int) -> Job | None:
    """Claim a queued job (or a running one whose worker stopped beating). None: not ours to run."""
    now = utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout_s)
    claimed = affected(
        session,
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(
                Job.status == "queued",
                # Take over a job whose worker died, but never a story waiting on its children.
                (Job.status == "running") & (Job.heartbeat_at < stale) & ~_has_children(),
            ),
        )
        .values(
            status="running",
            attempts=Job.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
    )
    if not claimed:
        # A job canceled while queued ends here, before any work starts.
        affected(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(True))
            .values(status="canceled", finished_at=now, updated_at=now),
        )
        session.commit()
        return None
    session.commit()
    return session.get(Job, job_id, populate_existing=True)


def affected(session: Session, statement: Any) -> int:
    """Rows changed by an UPDATE/DELETE: how a fenced transition knows whether it won."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount


def mirror(job: Job, **values: Any) -> None:
    """Reflect a Core UPDATE on the loaded object without marking it dirty (no unfenced flush)."""
    for key, value in values.items():
        set_committed_value(job, key, value)


def _fenced(job: Job) -> Any:
    return update(Job).where(
        Job.id == job.id, Job.status == "running", Job.attempts == job.attempts
    )


def set_progress(session: Session, job: Job, step: str, current: int = 0, total: int = 0) -> bool:
    """Record progress and beat the heart; False when the job is no longer ours (stop working)."""
    now = utcnow()
    progress = {"step": step, "current": current, "total": total}
    done = affected(
        session, _fenced(job).values(progress=progress, heartbeat_at=now, updated_at=now)
    )
    if done:
        mirror(job, progress=progress)
    return bool(done)


def heartbeat(session: Session, job: Job) -> bool:
    now = utcnow()
    return bool(affected(session, _fenced(job).values(heartbeat_at=now, updated_at=now)))


def succeed_job(
    session: Session,
    job: Job,
    result: dict[str, Any],
    *,
    usage: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> bool:
    """Finish successfully; call in the same transaction as the job's domain writes."""
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
    return bool(affected(session, _fenced(job).values(**values)))


def fail_job(
    session: Session, job: Job, code: str, message: str, *, retryable: bool = False
) -> bool:
    now = utcnow()
    error = {"code": code, "message": message, "retryable": retryable}
    return bool(
        affected(
            session,
            _fenced(job).values(
                status="failed", error=error, finished_at=now, heartbeat_at=now, updated_at=now
            ),
        )
    )


def cancel_running_job(session: Session, job: Job, reason: str = "canceled") -> bool:
    now = utcnow()
    error = {"code": reason, "message": "the job was canceled", "retryable": False}
    return bool(
        affected(
            session,
            _fenced(job).values(status="canceled", error=error, finished_at=now, updated_at=now),
        )
    )


def requeue_for_retry(
    session: Session, job: Job, code: str, message: str, *, delay_s: float
) -> bool:
    """Requeue a running job after a retryable failure; its last error stays visible."""
    now = utcnow()
    error = {"code": code, "message": message, "retryable": True}
    return bool(
        affected(
            session,
            _fenced(job).values(
                status="queued",
                error=error,
                heartbeat_at=None,
                enqueued_at=now + timedelta(seconds=delay_s),
                updated_at=now,
            ),
        )
    )


def requeue_throttled(session: Session, job: Job, *, delay_s: float) -> bool:
    """Re-schedule a job the rate limiter turned away; waiting for quota costs no attempt."""
    now = utcnow()
    return bool(affected(session, _fenced(job).values(
        status="queued",
        attempts=Job.attempts - 1,
        progress={"step": "waiting_for_quota", "current": 0, "total": 0},
        heartbeat_at=None,
        enqueued_at=now + timedelta(seconds=delay_s),
        updated_at=now,
    )))


def cancel_requested(session: Session, job_id: uuid.UUID) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel now if queued; ask a running job to stop at its next safe point; children too."""
    now = utcnow()
    ids = [job.id, *session.scalars(select(Job.id).where(Job.parent_id == job.id))]
    session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.status == "queued")
        .values(
            status="canceled",
            cancel_requested=True,
            finished_at=now,
            updated_at=now,
            error={"code": "canceled", "message": "the job was canceled", "retryable": False},
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.status == "running")
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if job.kind == "story":
        # A story waiting on illustrations has no worker to notice the request: settle it here.
        from workers.fanout import on_child_finished

        on_child_finished(session, job.id)
    session.refresh(job)
    return job


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES
