"""One thread per worker process beats every job that process is running, in a single UPDATE
per interval, so a job whose worker died is noticed within the heartbeat timeout while a slow
Gemini call never looks dead. The same UPDATE asks a job past its deadline to stop.

Only an attempt that a live thread runs is beaten: each ``track`` is undone by its own token,
so a job run twice in one process (a reclaimed attempt) keeps the beat of the run still going,
and an entry whose thread ended without untracking it is dropped. A job nobody runs any more
then goes stale, and the reaper takes it back.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid

from sqlalchemy import false, func, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from models import Job
from models.base import utcnow
from workers.job_mirror import touch

log = logging.getLogger(__name__)


class HeartbeatPump:
    def __init__(self, session_factory: sessionmaker[Session], interval_s: float) -> None:
        self._session_factory = session_factory
        self.interval_s = interval_s
        # token -> (job id, the attempt this process runs, the thread running it)
        self._running: dict[int, tuple[uuid.UUID, int, threading.Thread]] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, job_id: uuid.UUID, attempt: int) -> int:
        """Beat this attempt while the calling thread runs it; untrack it with the token."""
        with self._lock:
            token = next(self._tokens)
            self._running[token] = (job_id, attempt, threading.current_thread())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="job-heartbeat", daemon=True
                )
                self._thread.start()
        return token

    def untrack(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)

    def running(self) -> set[tuple[uuid.UUID, int]]:
        """(job id, attempt) of every attempt a live thread of this process runs."""
        with self._lock:
            for token, (_, _, thread) in list(self._running.items()):
                if not thread.is_alive():
                    del self._running[token]
            return {(job_id, attempt) for job_id, attempt, _ in self._running.values()}

    def beat(self) -> int:
        """Beat every tracked job still running at the tracked attempt; returns rows touched."""
        running = self.running()
        if not running:
            return 0
        now = utcnow()
        with self._session_factory() as session:
            beaten = session.execute(
                update(Job)
                .where(
                    tuple_(Job.id, Job.attempts).in_(sorted(running)),
                    Job.status == "running",
                )
                # A job past its deadline is asked to stop, in the same statement.
                .values(
                    heartbeat_at=now,
                    # A beat changes nothing a client sees: updatedAt (and so the job's ETag)
                    # stays, or every poll of a running job would miss its 304.
                    updated_at=Job.updated_at,
                    cancel_requested=Job.cancel_requested
                    | func.coalesce(Job.deadline_at <= now, false()),
                )
                .returning(Job.id, Job.cancel_requested)
                .execution_options(synchronize_session=False)
            ).all()
            for job_id, stopping in beaten:
                if stopping:  # asked to stop (its deadline): clients see cancelRequested
                    touch(session, job_id)
            session.commit()
            return len(beaten)

    def _loop(self) -> None:
        while not self._wake.wait(self.interval_s):
            try:
                self.beat()
            except Exception as exc:
                log.warning("heartbeat failed", extra={"error": type(exc).__name__})

    def stop(self) -> None:
        self._wake.set()
