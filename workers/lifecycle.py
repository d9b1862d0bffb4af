"""Job state transitions. Each one is fenced (``UPDATE ... WHERE status=? AND attempts=?``) so a
redelivered or duplicated message can never move a job twice or resurrect a finished one, and
each one appends its event to the job's log in the same transaction."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, exists, func, null, or_, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from models import Film, Job, Story
from models.base import utcnow
from models.film import FILM_WAITING
from models.job import loaded_job
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
    """SQL: the job waits on its children: a story whose text is written, waiting for its
    illustrations, or a film whose script is written, waiting for its narrations or render.

    Such a job has no worker (its children do the work), so it is never taken over or reaped
    as lost; a story still being written is, like any other job.
    """
    return or_(
        exists().where(Story.job_id == Job.id, Story.status == "illustrating"),
        exists().where(Film.job_id == Job.id, Film.status.in_(FILM_WAITING)),
    )


# Fenced transitions are Core UPDATEs of the table, built once per shape with bound values:
# building a statement and its cache key cost more Python than running it, and the
# ORM-enabled form (``update(Job)``) more again; ``mirror`` keeps the loaded object in step.
JOBS = cast(Table, Job.__table__)


@functools.cache
def _fenced_update(bound: frozenset[str], nulls: frozenset[str], stop_if_asked: bool,
                   give_back_attempt: bool) -> Any:
    """UPDATE the running job at its attempt (``f_id``, ``f_attempts``): ``bound`` columns to
    ``v_<name>``, ``nulls`` to NULL, RETURNING the row. ``stop_if_asked``: not once it was
    asked to stop; ``give_back_attempt``: the attempt did not count."""
    statement = update(JOBS).where(JOBS.c.id == bindparam("f_id"), JOBS.c.status == "running",
                                   JOBS.c.attempts == bindparam("f_attempts"))
    if stop_if_asked:
        statement = statement.where(JOBS.c.cancel_requested.is_(False))
    values: dict[str, Any] = {name: bindparam(f"v_{name}", type_=JOBS.c[name].type)
                              for name in sorted(bound)}
    values.update((name, null()) for name in nulls)
    if give_back_attempt:
        values["attempts"] = JOBS.c.attempts - 1
    return statement.values(values).returning(*JOBS.c)


def _transition(session: Session, job: Job, values: dict[str, Any], *,
                stop_if_asked: bool = False, give_back_attempt: bool = False) -> bool:
    """Move ``job`` (running at its attempt) by one fenced UPDATE; False when the fence refused
    it. The row it returns is the source of the job's document after commit (no second read)."""
    bound = frozenset(name for name, value in values.items() if value is not None)
    statement = _fenced_update(bound, frozenset(values) - bound, stop_if_asked,
                               give_back_attempt)
    params = {f"v_{name}": values[name] for name in bound}
    row = session.execute(statement, {"f_id": job.id, "f_attempts": job.attempts, **params}
                          ).first()
    if row is None:
        return False
    mirror(job, version=row.version)
    touch(session, job.id, row)
    return True


# The claim: a queued job, or a running one whose worker stopped beating (not a story waiting
# on its illustrations: it has no worker), never one asked to stop or past its deadline.
_CLAIM = (
    update(JOBS)
    .where(
        JOBS.c.id == bindparam("c_id"),
        JOBS.c.cancel_requested.is_(False),
        or_(JOBS.c.deadline_at.is_(None), JOBS.c.deadline_at > bindparam("c_now")),
        or_(
            JOBS.c.status == "queued",
            (JOBS.c.status == "running") & (JOBS.c.heartbeat_at < bindparam("c_stale"))
            & ~waiting_on_children(),
        ),
    )
    .values(status="running", attempts=JOBS.c.attempts + 1, started_at=bindparam("c_now"),
            heartbeat_at=bindparam("c_now"), updated_at=bindparam("c_now"))
    .returning(*JOBS.c)
)


def _as_loaded(session: Session, row: Any) -> Job:
    """The session's ``Job`` for a row just returned: the one it holds, brought up to date, or
    a new one attached as if loaded (no ORM query, nothing to flush)."""
    values = row._asdict()
    job = loaded_job(session, row.id)
    if job is not None:
        mirror(job, **values)
        return job
    job = Job(**values)
    make_transient_to_detached(job)
    session.add(job)
    return job


def start_job(session: Session, job_id: uuid.UUID, *, heartbeat_timeout_s: int) -> Job | None:
    """Claim a queued job (or a running one whose worker stopped beating). None: not ours to run."""
    now = utcnow()
    stale = now - timedelta(seconds=heartbeat_timeout_s)
    # One round trip: the claim returns the row it claimed (RETURNING).
    row = session.execute(_CLAIM, {"c_id": job_id, "c_now": now, "c_stale": stale}).first()
    if row is None:
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
    job = _as_loaded(session, row)
    status_event(session, job_id, "running", attempt=job.attempts)
    touch(session, job_id, row)
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
    done = _transition(session, job, {"progress": progress, "heartbeat_at": now,
                                      "updated_at": now})
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
    if not _transition(session, job, values, stop_if_asked=True):
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
    if not _transition(session, job, {"status": "failed", "error": error, "finished_at": now,
                                      "heartbeat_at": now, "updated_at": now}):
        return False
    final_events(session, job.id, "failed", error=error)
    return True


def cancel_running_job(session: Session, job: Job) -> bool:
    """End a running job that stopped at a safe point: on request, or past its deadline
    (then with reason ``deadline``)."""
    now = utcnow()
    error = DEADLINE_CANCELED if past_deadline(job, now) else CANCELED
    if not _transition(session, job, {"status": "canceled", "error": error, "finished_at": now,
                                      "updated_at": now}):
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
    if not _transition(session, job, {"status": "queued", "error": error, "heartbeat_at": None,
                                      "enqueued_at": now + timedelta(seconds=delay_s),
                                      "updated_at": now}):
        return False
    status_event(session, job.id, "queued", error=error, retryInSeconds=round(delay_s, 1))
    return True


def requeue_waiting(
    session: Session, job: Job, *, step: str, delay_s: float,
    error: dict[str, Any] | None = None, progress: dict[str, Any] | None = None,
) -> bool:
    """Re-schedule a job that must wait (for quota, for an identical job in flight, for an
    upstream operation); waiting costs no attempt and holds no worker thread. ``error``: the
    upstream answer that said so; ``progress``: more to show while it waits."""
    now = utcnow()
    progress = {"step": step, "current": 0, "total": 0, **(progress or {})}
    values: dict[str, Any] = {
        "status": "queued",
        "progress": progress,
        "heartbeat_at": None,
        "enqueued_at": now + timedelta(seconds=delay_s),
        "updated_at": now,
    }
    if error is not None:
        values["error"] = error
    if not _transition(session, job, values, give_back_attempt=True):
        return False
    status_event(session, job.id, "queued", progress=progress, error=error)
    return True


def set_upstream_operation(session: Session, job: Job, operation: dict[str, Any]) -> bool:
    """Record the upstream operation this attempt started or follows (fenced on the attempt);
    False when the job is no longer ours. The caller commits."""
    now = utcnow()
    if not _transition(session, job, {"upstream_operation": operation, "heartbeat_at": now,
                                      "updated_at": now}):
        return False
    mirror(job, upstream_operation=operation)
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


def child_counts(session: Session, parent_id: uuid.UUID) -> dict[str, int]:
    """A parent's children by status."""
    rows = session.execute(
        select(Job.status, func.count()).where(Job.parent_id == parent_id).group_by(Job.status)
    ).all()
    return {status: count for status, count in rows}


def stop_children(session: Session, parent_id: uuid.UUID) -> None:
    """Cancel the parent's queued children now, ask its running ones to stop (in the caller's
    transaction)."""
    now = utcnow()
    queued = list(session.scalars(
        update(Job).where(Job.parent_id == parent_id, Job.status == "queued")
        .values(status="canceled", cancel_requested=True, error=CANCELED, finished_at=now,
                updated_at=now)
        .returning(Job.id).execution_options(synchronize_session=False)
    ))
    for child_id in queued:
        final_events(session, child_id, "canceled", error=CANCELED)
    ask_to_stop(session, Job.parent_id == parent_id)


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel now if queued; ask a running job to stop at its next safe point; children too.
    (A parent waiting on children is settled by ``workers.parents.cancel_job``.)"""
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
    session.refresh(job)
    return job
