"""Periodic maintenance run by beat. With the database away a pass is skipped (one warning,
no stack trace): the next one, a beat interval later, catches up."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

from models.db import database_unavailable
from workers.app import celery_app
from workers.context import get_context
from workers.reaper import reap_stale_jobs
from workers.retention import prune_retention

log = logging.getLogger(__name__)


def _in_session(task: str, work: Callable[[Session], object]) -> None:
    try:
        with get_context().session_factory() as session:
            work(session)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning("maintenance pass skipped: database unavailable",
                    extra={"task": task, "error": type(exc).__name__})


@celery_app.task(name="lifetales.reap_stale_jobs", acks_late=False, ignore_result=True)
def reap_stale_jobs_task() -> None:
    settings = get_context().settings
    _in_session("reap_stale_jobs", lambda session: reap_stale_jobs(
        session,
        resend_after_s=settings.queued_resend_after_s,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
    ))


@celery_app.task(name="lifetales.prune_retention", acks_late=False, ignore_result=True)
def prune_retention_task() -> None:
    ctx = get_context()
    _in_session("prune_retention",
                lambda session: prune_retention(session, ctx.storage, ctx.settings.retention))
