"""Beat-driven recovery: re-send jobs whose message was lost, recover jobs whose worker died,
end or stop jobs past their deadline, re-send webhook deliveries whose message was lost."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session, aliased

from models import TERMINAL_STATUSES, Job, Story
from models.base import utcnow
from models.db import server_uptime_s
from workers.dispatch import TASKS, send_job_message
from workers.events import final_events, status_event
from workers.lifecycle import (
    DEADLINE_CANCELED,
    affected,
    ask_to_stop,
    end_overdue,
    waiting_on_children,
)
from workers.parents import abandon_attempt, on_child_finished
from workers.webhooks import resend_due_deliveries

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class ReapReport:
    resent: int = 0
    requeued: int = 0
    failed: int = 0
    completed_parents: int = 0
    past_deadline: int = 0
    webhooks_resent: int = 0


def reap_stale_jobs(
    session: Session, *, resend_after_s: int, heartbeat_timeout_s: int
) -> ReapReport:
    report = ReapReport()
    now = utcnow()
    report.past_deadline = enforce_deadlines(session)

    # 1. Queued too long: the message was never sent (broker down) or got lost. Re-send it.
    due = now - timedelta(seconds=resend_after_s)
    queued = session.execute(
        select(Job.id, Job.kind, Job.queue)
        .where(Job.status == "queued", func.coalesce(Job.enqueued_at, Job.created_at) < due)
        .order_by(Job.created_at)
        .limit(BATCH)
    ).all()
    session.commit()  # no transaction (nor row lock) is held while the messages go out
    # Publishing takes a broker round trip each (a publisher confirm on RabbitMQ): rows updated
    # one by one in the loop stayed locked until its end, and workers claiming those jobs waited.
    sent = [job_id for job_id, kind, queue in queued
            if kind in TASKS and send_job_message(job_id, kind, queue)]
    if sent:
        session.execute(
            update(Job).where(Job.id.in_(sent), Job.status == "queued")
            # Bookkeeping only: updatedAt (the job's ETag) stays as clients last saw it.
            .values(enqueued_at=now, updated_at=Job.updated_at)
        )
    report.resent = len(sent)
    session.commit()

    # 2. Running with an expired heartbeat: the worker died.
    if _heartbeats_had_time(session, heartbeat_timeout_s):
        recover_lost_jobs(session, report, stale=now - timedelta(seconds=heartbeat_timeout_s))

    # 3. Webhook deliveries whose message was lost (broker down, worker died mid-attempt).
    report.webhooks_resent = resend_due_deliveries(session, overdue_s=resend_after_s)
    if any(report.__dict__.values()):
        log.info("reaper acted", extra={"report": report.__dict__})
    return report


def _heartbeats_had_time(session: Session, heartbeat_timeout_s: int) -> bool:
    """A database that restarted less than a heartbeat timeout ago took no beats while it was
    down: every heartbeat is old then, live workers' too. They get a full timeout to beat
    again (the jobs their threads waited out the outage with are theirs to run again)."""
    uptime = server_uptime_s(session)
    return uptime is None or uptime >= heartbeat_timeout_s


def recover_lost_jobs(session: Session, report: ReapReport, *, stale: datetime) -> None:
    """Re-queue (or fail, out of attempts) running jobs whose heartbeat is older than
    ``stale``: their worker died. A story waiting on illustrations has no worker of its own;
    it is settled once its children are all finished."""
    now = utcnow()
    child = aliased(Job)
    unfinished_child = exists().where(
        child.parent_id == Job.id, child.status.not_in(TERMINAL_STATUSES)
    )
    lost = session.scalars(
        select(Job)
        .where(Job.status == "running", Job.heartbeat_at < stale, ~unfinished_child)
        .limit(BATCH)
        .execution_options(populate_existing=True)  # fences compare the row's real attempts
    ).all()
    for job in lost:
        if session.scalar(select(waiting_on_children()).where(Job.id == job.id)):
            # Every child finished but the parent's completion was lost with its worker.
            on_child_finished(session, job.id)
            session.refresh(job)
            if job.status != "running":
                report.completed_parents += 1
            continue
        fence = update(Job).where(
            Job.id == job.id, Job.status == "running", Job.attempts == job.attempts
        )
        error = {
            "code": "worker_lost",
            "message": "the worker running this job stopped",
            "retryable": True,
        }
        if job.attempts < job.max_attempts:
            if affected(
                session,
                fence.values(
                    status="queued", error=error, heartbeat_at=None, enqueued_at=now, updated_at=now
                ),
            ):
                status_event(session, job.id, "queued", error=error)
                session.commit()
                send_job_message(job.id, job.kind, job.queue)
                report.requeued += 1
        elif affected(
            session,
            fence.values(
                status="failed", error=error | {"retryable": False}, finished_at=now, updated_at=now
            ),
        ):
            final_events(session, job.id, "failed", error=error | {"retryable": False})
            session.commit()
            report.failed += 1
            if job.parent_id is not None:
                on_child_finished(session, job.parent_id)
    session.commit()


def enforce_deadlines(session: Session) -> int:
    """Jobs past their deadline. Queued: they end now (``expired``, or ``canceled`` if they had
    started), never waiting for a worker. Running: asked to stop at their next safe point; a
    story waiting on its illustrations has no worker to ask, so it is ended here and its
    illustrations stopped. Returns how many jobs were acted on."""
    ended = end_overdue(session)
    session.commit()
    for _, parent_id in ended:
        if parent_id is not None:
            on_child_finished(session, parent_id)
    now = utcnow()
    overdue = session.execute(
        select(Job.id, Job.attempts, waiting_on_children())
        .where(Job.status == "running", Job.deadline_at <= now, Job.cancel_requested.is_(False))
        .limit(BATCH)
    ).all()
    for job_id, attempts, waiting in overdue:
        if not waiting:
            ask_to_stop(session, Job.id == job_id)
            session.commit()
            continue
        if affected(session, update(Job).where(
                Job.id == job_id, Job.status == "running", Job.attempts == attempts,
        ).values(status="canceled", cancel_requested=True, error=DEADLINE_CANCELED,
                 finished_at=now, updated_at=now)):
            session.execute(update(Story).where(Story.job_id == job_id,
                                                Story.status == "illustrating")
                            .values(status="canceled"))
            final_events(session, job_id, "canceled", error=DEADLINE_CANCELED)
        session.commit()
        abandon_attempt(session, job_id)
    return len(ended) + len(overdue)
