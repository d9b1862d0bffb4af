"""A job attempt outlives a database outage: the thread running it waits for the database and
runs the same attempt again, instead of leaving the job ``running`` or failing it for an
outage. Past the patience it gives up, and the reaper takes the job back once the database
returns (its heartbeat is stale by then)."""

from __future__ import annotations

import logging
import random
import time
import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from models import Job
from models.base import utcnow
from models.db import accepts_writes
from workers.lifecycle import affected, waiting_on_children

log = logging.getLogger(__name__)

# How long a worker thread waits for the database before leaving its job to the reaper; a
# crash-restart or a managed failover takes seconds to a minute.
PATIENCE_S = 60.0
# How many times one message's attempt is run again for outages before it is left to the reaper.
MAX_RERUNS = 5
_FIRST_WAIT_S = 0.25
_LONGEST_WAIT_S = 2.0


def discard(session: Session) -> None:
    """Forget the session's failed transaction (its connection is gone or unusable)."""
    try:
        session.rollback()
    except Exception as error:  # the connection is dead: the pool drops it
        log.debug("rollback after an outage failed", extra={"error": type(error).__name__})


def wait_for_database(factory: sessionmaker[Session], patience_s: float | None = None) -> bool:
    """Wait until the database accepts writes again (up, not starting, not a read-only replica);
    False if it did not within ``patience_s`` (default ``PATIENCE_S``)."""
    deadline = time.monotonic() + (PATIENCE_S if patience_s is None else patience_s)
    wait = _FIRST_WAIT_S
    while True:
        try:
            with factory() as session:
                if accepts_writes(session):
                    return True
        except Exception as error:  # still away: look again shortly
            log.debug("database still unavailable", extra={"error": type(error).__name__})
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(random.uniform(wait / 2, wait))  # noqa: S311 - jitter, not cryptography
        wait = min(_LONGEST_WAIT_S, wait * 2)


def resume_attempt(factory: sessionmaker[Session], session: Session, job: Job,
                   job_id: uuid.UUID, attempt: int) -> bool:
    """After an outage cut an attempt short: wait for the database, then whether the attempt is
    still this thread's to run again (the reaper may have taken the job back, or it may have
    finished or be waiting for its illustrations, the commit having gone through after all).
    Beats it in the same statement: its heartbeat went stale while the database was away."""
    discard(session)
    if not wait_for_database(factory):
        return False
    ours = affected(session, update(Job).where(
        Job.id == job_id, Job.status == "running", Job.attempts == attempt,
        ~waiting_on_children(),
    ).values(heartbeat_at=utcnow(), updated_at=Job.updated_at)  # unseen by clients, as a beat
     .execution_options(synchronize_session=False))
    session.commit()
    if ours:
        session.refresh(job)  # the handler runs again on the row as it is now
    return bool(ours)
