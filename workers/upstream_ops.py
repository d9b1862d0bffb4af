"""A job's long-running upstream operation (a video generation of a minute or more): started
once, written on the job before the job waits on it, then followed by re-scheduling the job at
a growing interval, so that no worker thread waits on it and no second one is ever started.

The record, ``jobs.upstream_operation``::

    {"state": ..., "id": "<upstream id>", "model": ..., "attempt": <job attempt that started
     it>, "startedAt": ISO time, "starts": <operations this job started>}

``state``: ``starting`` (committed before the call that starts it: found again, the worker
died inside that call and the operation may exist), ``running`` (its id is known: poll it),
``succeeded`` (finished with its result: fetch it), ``failed`` (ended without a result: a
retry may start another), ``not_started`` (the start was refused: likewise), ``unconfirmed``
(the start was sent but never answered: never started again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models import Job
from models.base import utcnow
from workers import lifecycle
from workers.attempt import JobCanceled, JobFailed, JobRun, MustWait
from workers.job_resource import UPSTREAM_STARTABLE

WAIT_STEP = "generating"
UNCONFIRMED = "upstream_unconfirmed"


def operation(job: Job) -> dict[str, Any] | None:
    return job.upstream_operation


def may_start(job: Job) -> bool:
    """Whether this job may start an operation now: it has none, or the last one ended with
    nothing to pay for. A ``starting`` or ``unconfirmed`` one fails the job instead."""
    current = operation(job)
    if current is None or current.get("state") in UPSTREAM_STARTABLE:
        return True
    if current.get("state") in ("starting", "unconfirmed"):
        raise JobFailed(UNCONFIRMED, "The worker stopped while the generation was being "
                        "started: it may have started upstream (and be billed). It is not "
                        "started again, so that it is never paid for twice.")
    return False


def _write(run: JobRun, record: dict[str, Any]) -> None:
    """Write the record on this attempt, and commit it (with any progress pending)."""
    if not lifecycle.set_upstream_operation(run.session, run.job, record):
        run.session.rollback()
        raise JobCanceled  # the job was taken from us (canceled or reclaimed)
    run.session.commit()


def mark_starting(run: JobRun, model: str) -> None:
    """Committed before the call that starts an operation: whatever happens to this worker
    during that call, the job knows an operation may exist."""
    before = operation(run.job) or {}
    _write(run, {"state": "starting", "model": model, "attempt": run.job.attempts,
                 "starts": int(before.get("starts", 0)) + 1, "at": utcnow().isoformat()})


def record_started(run: JobRun, operation_id: str, model: str, estimate_s: int) -> None:
    """The operation exists: its id, written (with the ``generating`` step) in one commit on
    this attempt before the job waits on it."""
    run.progress(WAIT_STEP, 0, estimate_s, commit=False)
    _write(run, {**(operation(run.job) or {}), "state": "running", "id": operation_id,
                 "model": model, "startedAt": utcnow().isoformat()})


def record_state(run: JobRun, state: str) -> None:
    """A new state of the operation (``succeeded``, ``failed``, ``not_started``,
    ``unconfirmed``), committed at once: it must outlive whatever this attempt does next."""
    _write(run, {**(operation(run.job) or {}), "state": state,
                 "endedAt": utcnow().isoformat()})


def waited_s(job: Job) -> float:
    started = (operation(job) or {}).get("startedAt")
    if not started:
        return 0.0
    return max(0.0, (utcnow() - datetime.fromisoformat(started)).total_seconds())


def poll_delay(waited: float, *, minimum: float, maximum: float, growth: float,
               estimate: float) -> float:
    """When to look again: ``growth`` of the time waited so far, within [minimum, maximum];
    one look falls on the estimate itself, when most operations are done."""
    delay = min(maximum, max(minimum, waited * growth))
    if waited < estimate < waited + delay:
        delay = max(1.0, estimate - waited)
    return delay


def wait_again(waited: float, delay: float, estimate_s: int) -> MustWait:
    """Re-schedule the job ``delay`` seconds from now (no thread held, no attempt spent),
    showing how long it has waited and the estimate."""
    expected = max(estimate_s, round(waited + delay))
    return MustWait(delay, step=WAIT_STEP, progress={
        "current": round(waited), "total": expected,
        "estimatedSecondsRemaining": max(0, round(expected - waited)),
    })
