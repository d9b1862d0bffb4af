"""What a job's handler is given (``JobRun``: its session, its job, the worker's context and
the upstream helpers) and how it says the attempt cannot finish now (``JobFailed``,
``JobCanceled``, ``MustWait``).

Kept apart from ``runner`` (which claims the job and settles its parent after the attempt) so
that modules the runner reaches, such as the result cache, can take a ``JobRun`` without
importing the runner back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

import telemetry
from agents.types import Usage
from models import Job
from workers import lifecycle
from workers.context import WorkerContext


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
