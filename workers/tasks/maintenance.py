"""Periodic maintenance run by beat."""

from __future__ import annotations

from workers.app import celery_app
from workers.context import get_context
from workers.reaper import reap_stale_jobs
from workers.retention import prune_retention


@celery_app.task(name="lifetales.reap_stale_jobs", acks_late=False, ignore_result=True)
def reap_stale_jobs_task() -> None:
    ctx = get_context()
    with ctx.session_factory() as session:
        reap_stale_jobs(
            session,
            resend_after_s=ctx.settings.queued_resend_after_s,
            heartbeat_timeout_s=ctx.settings.heartbeat_timeout_s,
        )


@celery_app.task(name="lifetales.prune_retention", acks_late=False, ignore_result=True)
def prune_retention_task() -> None:
    ctx = get_context()
    with ctx.session_factory() as session:
        prune_retention(session, ctx.storage, ctx.settings.retention)
