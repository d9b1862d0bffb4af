"""Task messages sent only after the transaction that asked for them commits, and never when
it rolls back: a job's, a webhook delivery's.

Below ``dispatch`` (jobs) and ``webhooks`` (deliveries), which both send through it, and above
nothing of ``workers`` but the Celery app itself.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from workers.app import celery_app

log = logging.getLogger(__name__)

_PENDING = "lifetales.pending_tasks"


def enqueue_task_after_commit(
    session: Session, task_name: str, queue: str, args: list[Any], *,
    countdown: float | None = None,
) -> None:
    """Queue a task message (a job's, a webhook delivery's) for sending when (and only if)
    the transaction commits."""
    session.info.setdefault(_PENDING, []).append((task_name, queue, args, countdown))


def install_enqueue_after_commit(factory: sessionmaker[Session]) -> None:
    event.listen(factory, "after_commit", _send_pending)
    event.listen(factory, "after_rollback", _drop_pending)


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _send_pending(session: Session) -> None:
    for task_name, queue, args, countdown in session.info.pop(_PENDING, ()):
        send_task_message(task_name, queue, args, countdown=countdown)


def send_task_message(
    task_name: str, queue: str, args: list[Any], *, countdown: float | None = None
) -> bool:
    """Publish a task message; on broker trouble log and return False (the reaper re-sends)."""
    try:
        celery_app.send_task(
            task_name, args=args, queue=queue, countdown=countdown, ignore_result=True
        )
    except Exception as exc:
        log.warning(
            "task message not sent; the reaper will re-send it",
            extra={"task": task_name, "task_args": args, "error": type(exc).__name__},
        )
        return False
    return True
