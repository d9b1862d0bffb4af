"""Runs one job attempt: claim -> handler (agent call + domain writes) -> fenced transition.

Handlers are plain functions of a ``JobRun`` so they can be tested without a worker.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

import telemetry
from agents.errors import AgentError
from agents.types import Usage
from models import Job
from models.base import utcnow
from models.db import database_unavailable
from workers import lifecycle, outage
from workers.context import WorkerContext, get_context
from workers.dispatch import enqueue_after_commit

log = logging.getLogger(__name__)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 120.0  # far below the broker visibility timeout (1 h)
# How long a job keeps waiting out upstream 429s before they start costing attempts.
RATE_LIMITED_PATIENCE_S = 600.0


class JobFailed(Exception):
    """A handler's domain failure with a client-safe message."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class JobCanceled(Exception):
    """Raised at a safe point when the job was asked to stop."""


class MustWait(Exception):
    """The job cannot proceed yet (no rate-limit room, identical work in flight): re-schedule
    it instead of holding a worker thread; ``step`` says what it waits for."""

    def __init__(self, wait_s: float, step: str = "waiting_for_quota",
                 progress: dict[str, Any] | None = None) -> None:
        super().__init__(f"{step}: retry in {wait_s:.1f}s")
        self.wait_s = wait_s
        self.step = step
        self.progress = progress  # more of the job's progress while it waits (an estimate)


class HasUsage(Protocol):
    @property
    def usage(self) -> Usage: ...


R = TypeVar("R", bound=HasUsage)

# Wait this long in the worker for rate-limit room; longer waits re-schedule the job instead.
MAX_INLINE_WAIT_S = 2.0


@dataclass
class JobRun:
    context: WorkerContext
    session: Session
    job: Job
    reruns: int = 0  # times this attempt was run again after a database outage

    def progress(
        self, step: str, current: int = 0, total: int = 0, *, commit: bool = True
    ) -> None:
        """Record progress; ``commit=False`` lets it ride on the handler's next commit (one
        transaction fewer when that commit follows at once)."""
        if not lifecycle.set_progress(self.session, self.job, step, current, total):
            raise JobCanceled  # the job was taken from us (canceled or reclaimed)
        if commit:
            self.session.commit()

    @property
    def in_batch(self) -> bool:
        """A batch's job: its calls are held to the batch share of the rate limit as well."""
        return self.job.queue == "batch"

    def acquire_upstream(self, model: str, estimated_tokens: int) -> None:
        """Take room for one model call in the global rate limit, or re-schedule the job."""
        limiter = self.context.limiter
        if limiter is None:
            telemetry.model_call_started(self.job.kind, model)
            return
        batch = self.in_batch
        wait = limiter.acquire(model, estimated_tokens, batch=batch)
        if 0 < wait <= MAX_INLINE_WAIT_S:
            telemetry.observe_rate_limit_wait(model, "waited", wait)
            time.sleep(wait)
            wait = limiter.acquire(model, estimated_tokens, batch=batch)
        if wait > 0:
            telemetry.observe_rate_limit_wait(model, "rescheduled", wait)
            raise MustWait(wait)
        telemetry.model_call_started(self.job.kind, model)

    def settle_upstream(self, model: str, estimated_tokens: int, usage: Usage) -> None:
        """Charge the call's real token usage against what was estimated."""
        telemetry.model_call_finished(self.job.kind, model, usage)
        if self.context.limiter is not None:
            used = usage.input_tokens + usage.output_tokens
            self.context.limiter.settle(model, estimated_tokens, used, batch=self.in_batch)

    def call_upstream(self, model: str, estimated_tokens: int, call: Callable[[], R]) -> R:
        """Make one model call within the global rate limit, then charge its real token usage."""
        self.acquire_upstream(model, estimated_tokens)
        result = call()
        self.settle_upstream(model, estimated_tokens, result.usage)
        return result

    def kept_answer(self, digest: str) -> dict[str, Any] | None:
        """The model answer an earlier run of this job paid for and could not commit (see
        workers/answers.py); a first run has none, so it does not look."""
        answers = self.context.answers
        if answers is None or (self.job.attempts <= 1 and not self.reruns):
            return None
        return answers.recall(self.job.id, digest)

    def keep_answer(self, digest: str, answer: dict[str, Any]) -> None:
        """Keep a paid answer until this job's transaction commits."""
        if self.context.answers is not None:
            self.context.answers.keep(self.job.id, digest, answer)

    def check_cancel(self) -> None:
        # Past its deadline the job stops here too; it then ends canceled, reason ``deadline``.
        if lifecycle.past_deadline(self.job) or lifecycle.cancel_requested(
            self.session, self.job.id
        ):
            raise JobCanceled

    def succeed(self, result: dict[str, Any], usage: Usage | dict[str, Any] | None = None) -> None:
        """Finish and commit together with whatever domain writes the session holds."""
        ok = lifecycle.succeed_job(
            self.session,
            self.job,
            result,
            usage=usage_dict(usage) if isinstance(usage, Usage) else usage,
            progress={"step": "done", "current": 1, "total": 1},
        )
        if not ok:
            self.session.rollback()
            raise JobCanceled
        self.session.commit()
        lifecycle.mirror(self.job, status="succeeded")


Handler = Callable[[JobRun], None]


def usage_dict(usage: Usage) -> dict[str, Any]:
    recorded: dict[str, Any] = {
        "model": usage.model,
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "calls": usage.calls,
    }
    if usage.video_seconds:
        recorded["videoSeconds"] = usage.video_seconds  # what a video model bills
    return recorded


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
