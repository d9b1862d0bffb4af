"""One thread per worker process beats every job that process is running, in a single UPDATE
per interval, so a job whose worker died is noticed within the heartbeat timeout while a slow
Gemini call never looks dead. The same UPDATE asks a job past its deadline to stop."""

from __future__ import annotations

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
        self._running: dict[uuid.UUID, int] = {}  # job id -> the attempt this process runs
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, job_id: uuid.UUID, attempt: int) -> None:
        with self._lock:
            self._running[job_id] = attempt
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="job-heartbeat", daemon=True
                )
                self._thread.start()

    def untrack(self, job_id: uuid.UUID) -> None:
        with self._lock:
            self._running.pop(job_id, None)

    def running(self) -> dict[uuid.UUID, int]:
        with self._lock:
            return dict(self._running)

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
                    tuple_(Job.id, Job.attempts).in_(list(running.items())),
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
