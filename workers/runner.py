"""Runs one job attempt: claim -> handler (agent call + domain writes) -> fenced transition.

Handlers are plain functions of a ``JobRun`` so they can be tested without a worker.
"""

from __future__ import annotations

import itertools
import logging
import random
import uuid

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

import telemetry
from agents.errors import AgentError
from models import Job
from models.base import utcnow
from models.db import database_unavailable
from workers import lifecycle, outage
from workers.attempt import Handler, JobCanceled, JobFailed, JobRun, MustWait
from workers.context import WorkerContext, get_context
from workers.dispatch import enqueue_after_commit

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 120.0  # far below the broker visibility timeout (1 h)
# How long a job keeps waiting out upstream 429s before they start costing attempts.
RATE_LIMITED_PATIENCE_S = 600.0


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never shorter than the server's RetryInfo delay."""
    delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** max(0, attempt - 1))
    delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, RETRY_CAP_S)


def _age_s(job: Job) -> float:
    return (utcnow() - job.created_at).total_seconds()


def _run_s(job: Job) -> float:
    return (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0


def run_job(job_id: str, handler: Handler, *, context: WorkerContext | None = None) -> None:
    ctx = context or get_context()
    try:
        parsed_id = uuid.UUID(job_id)
    except ValueError:
        log.error("task for a malformed job id dropped", extra={"job_id": job_id})
        return
    with ctx.session_factory() as session:
        job = _claim(ctx, session, parsed_id)
        if job is None:
            log.info(
                "job not claimable (finished, canceled or running elsewhere)",
                extra={"job_id": job_id},
            )
            return
        attempt = job.attempts  # kept: a rollback expires the loaded row
        log_context = telemetry.begin_job(job_id, job.request_id)
        telemetry.observe_queue_wait(job.kind, job.enqueued_at or job.created_at, job.started_at)
        log.info("job started", extra={"job_id": job_id, "kind": job.kind, "attempt": attempt})
        run = JobRun(ctx, session, job)
        pump = ctx.heartbeat
        beating = pump.track(parsed_id, attempt) if pump is not None else None
        try:
            while True:
                try:
                    _run_attempt(run, handler)
                    break
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    log.warning("database unavailable mid-job; the attempt runs again once it "
                                "is back", extra={"job_id": job_id, "error": type(exc).__name__})
                    run.reruns += 1
                    if run.reruns > outage.MAX_RERUNS or not outage.resume_attempt(
                            ctx.session_factory, session, job, parsed_id, attempt):
                        log.warning("job left to the reaper", extra={"job_id": job_id})
                        break
        finally:
            # First, and by the id parsed above: nothing here may fail before the job leaves
            # the pump, or it would be beaten for good with no thread running it.
            if pump is not None and beating is not None:
                pump.untrack(beating)
            _after_attempt(session, job, job_id)
            telemetry.end_job(log_context)


def _claim(ctx: WorkerContext, session: Session, job_id: uuid.UUID) -> Job | None:
    """Claim the job; a claim the database's absence stopped is tried again once it is back."""
    for retry in itertools.count(1):
        try:
            return lifecycle.start_job(
                session, job_id, heartbeat_timeout_s=ctx.settings.heartbeat_timeout_s
            )
        except Exception as exc:
            if not database_unavailable(exc) or retry > outage.MAX_RERUNS:
                raise
            outage.discard(session)
            if not outage.wait_for_database(ctx.session_factory):
                raise
    raise AssertionError("unreachable")


def _run_attempt(run: JobRun, handler: Handler) -> None:
    """Run the handler and settle the attempt by how it ended. A database outage (in the
    handler or while settling) propagates: the caller runs the attempt again."""
    session, job, job_id = run.session, run.job, str(run.job.id)
    try:
        handler(run)
    except MustWait as exc:
        session.rollback()
        if lifecycle.requeue_waiting(session, job, step=exc.step, delay_s=exc.wait_s,
                                     progress=exc.progress):
            lifecycle.mirror(job, status="queued")
            enqueue_after_commit(session, job, countdown=exc.wait_s)
        session.commit()
        log.info("job re-scheduled", extra={"job_id": job_id, "step": exc.step,
                                            "delay_s": round(exc.wait_s, 2)})
    except JobCanceled:
        session.rollback()
        if lifecycle.cancel_running_job(session, job):
            lifecycle.mirror(job, status="canceled")
        session.commit()
        log.info("job canceled", extra={"job_id": job_id})
    except AgentError as exc:  # the model's or the media CDN's
        _record_failure(session, job, exc.code, exc.message, exc.retryable, exc.retry_after)
    except JobFailed as exc:
        _record_failure(session, job, exc.code, exc.message, exc.retryable, None)
    except SoftTimeLimitExceeded:
        _record_failure(session, job, "timeout", "the job ran past its time limit", True, None)
    except Exception as exc:
        if database_unavailable(exc):
            raise  # not the job's fault: never recorded as a failure
        log.exception("job handler crashed", extra={"job_id": job_id})
        _record_failure(
            session, job, "internal_error", "an internal error occurred", True, None
        )


def _after_attempt(session: Session, job: Job, job_id: str) -> None:
    """Log how the attempt ended and move the job's parent or children along. With the
    database away, the reaper does the latter once it is back."""
    try:
        log.info("job finished", extra={"job_id": job_id, "status": job.status,
                                        "seconds": round(_run_s(job), 3)})
        if job.status != "running":
            from workers.parents import WAITING_KINDS, abandon_attempt, on_child_finished

            if job.parent_id is not None:
                on_child_finished(session, job.parent_id)
            if job.kind in WAITING_KINDS:
                abandon_attempt(session, job.id)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning("job outcome not followed up: database unavailable; the reaper will",
                    extra={"job_id": job_id, "error": type(exc).__name__})


def _record_failure(
    session: Session,
    job: Job,
    code: str,
    message: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    telemetry.model_call_failed(code)
    session.rollback()
    if code == "upstream_rate_limited" and _age_s(job) < RATE_LIMITED_PATIENCE_S:
        # Back-pressure, not a fault: wait as told without spending an attempt, for a while.
        delay = retry_delay(1, retry_after)
        error = {"code": code, "message": message, "retryable": True}
        if lifecycle.requeue_waiting(session, job, step="rate_limited", delay_s=delay,
                                     error=error):
            lifecycle.mirror(job, status="queued")
            enqueue_after_commit(session, job, countdown=delay)
        session.commit()
        log.warning("upstream rate limited; waiting",
                    extra={"job_id": str(job.id), "delay_s": round(delay, 2)})
        return
    if retryable and job.attempts < job.max_attempts:
        delay = retry_delay(job.attempts, retry_after)
        if lifecycle.requeue_for_retry(session, job, code, message, delay_s=delay):
            lifecycle.mirror(job, status="queued")
            enqueue_after_commit(session, job, countdown=delay)
        session.commit()
        log.warning(
            "job attempt failed; retrying",
            extra={"job_id": str(job.id), "code": code, "delay_s": round(delay, 2)},
        )
        return
    if lifecycle.fail_job(session, job, code, message, retryable=retryable):
        lifecycle.mirror(job, status="failed")
    session.commit()
    log.warning("job failed", extra={"job_id": str(job.id), "code": code})
