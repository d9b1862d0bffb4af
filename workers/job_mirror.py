"""A copy of every job's public document in Redis, so a poll touches neither the database nor
marshmallow: one hash per job (owner, version, status, ETag, document bytes).

Written after each commit that changed a job, by the process that committed it
(workers/events.py collects what changed), from the row as that transaction left it. A Lua
script keeps the copy with the higher ``jobs.version`` (bumped in SQL by every UPDATE of the
row), so a writer that commits first but writes last can never put an older document back.

The database stays the truth. A missing entry (no Redis, evicted, expired, never written) is a
miss and the reader serves the same bytes from the database. A write that fails leaves an
older entry behind: the job is remembered and its entry deleted by this process's next write,
and every entry expires ``ttl_s`` after its last write, so an entry a process killed between
its commit and its write could not fix is gone after that long at most.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from config import PollSettings
from models import TERMINAL_STATUSES, Job
from workers.job_resource import JobDocument, job_document, recent_deliveries

log = logging.getLogger(__name__)

JOBS = cast(Table, Job.__table__)
# Kept in the session's ``info`` for the transaction under way:
_CHANGED = "lifetales.changed_jobs"  # jobs to announce and whose documents to refresh
_ROWS = "lifetales.job_rows"  # job id -> its row as this transaction leaves it (saves a read)
_GONE = "lifetales.jobs_gone"  # changed jobs deleted by the transaction
# Rendered before commit, written after it, kept until the next transaction for the answer.
_DOCUMENTS = "lifetales.job_documents"

KEY_PREFIX = "lifetales:job:"
# Keep the copy with the higher version; equal versions are the same document.
_WRITE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'owner', ARGV[2], 'status', ARGV[3],
           'etag', ARGV[4], 'doc', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""
# How long an unfinished job's document lives after its last write (see JobMirror.ttl_for).
LIVE_TTL_S = 30
# Jobs whose entry may be older than the database (a write failed): deleted on the next write.
MAX_UNSYNCED = 10_000


def key(job_id: uuid.UUID | str) -> str:
    return f"{KEY_PREFIX}{job_id}"


# --- what a transaction changed -------------------------------------------------------------


def touch(session: Session, job_id: uuid.UUID, row: Any = None) -> None:
    """The job changed in this transaction: announce it and refresh its document after commit.

    ``row``: the job as this transaction leaves it (``UPDATE ... RETURNING`` every column, or a
    job created here), which saves reading it again before commit. Every statement that
    changes what a client sees of a job calls this after it (or ``workers.events.emit``, which
    every transition does), so a row given earlier is never taken for a later state."""
    changed(session, job_id)
    rows = session.info.setdefault(_ROWS, {})
    if row is None:
        rows.pop(job_id, None)
    else:
        rows[job_id] = row


def changed(session: Session, job_id: uuid.UUID) -> None:
    """The job has news (an event): announce it and refresh its document after commit."""
    session.info.setdefault(_CHANGED, set()).add(job_id)


def render_changed(session: Session) -> None:
    """Before commit, inside the transaction: the documents of the jobs it changed, from the
    rows it leaves (it holds the lock of every row it updated: what is read is what commits)."""
    job_ids = session.info.get(_CHANGED)
    if not job_ids:
        return
    session.flush()  # jobs created here get their defaults (version) first
    rows: dict[uuid.UUID, Any] = dict(session.info.get(_ROWS) or {})
    missing = [job_id for job_id in job_ids if job_id not in rows]
    if missing:
        rows.update((row.id, row) for row in session.execute(
            select(JOBS).where(JOBS.c.id.in_(missing))))
        session.info[_GONE] = {job_id for job_id in missing if job_id not in rows}
    session.info[_DOCUMENTS] = {
        job_id: job_document(row, recent_deliveries(session, row))
        for job_id, row in rows.items() if job_id in job_ids
    }


@dataclass(frozen=True)
class Changes:
    """What a committed transaction changed: jobs to announce, documents to write, gone jobs."""

    job_ids: set[uuid.UUID] = field(default_factory=set)
    documents: list[JobDocument] = field(default_factory=list)
    gone: set[uuid.UUID] = field(default_factory=set)


def take_changes(session: Session) -> Changes:
    """After commit: what it changed (the documents stay for ``committed_document``)."""
    job_ids = session.info.pop(_CHANGED, None) or set()
    session.info.pop(_ROWS, None)
    gone = session.info.pop(_GONE, None) or set()
    return Changes(job_ids, list((session.info.get(_DOCUMENTS) or {}).values()), gone)


def begin(session: Session) -> None:
    session.info.pop(_DOCUMENTS, None)


def forget_changes(session: Session) -> None:
    for name in (_CHANGED, _ROWS, _GONE, _DOCUMENTS):
        session.info.pop(name, None)


def committed_document(session: Session, job: Any) -> JobDocument | None:
    """The document of ``job`` rendered at the session's last commit, if that left it as
    ``job`` is now (an answer then sends these bytes instead of rendering them again)."""
    found: JobDocument | None = (session.info.get(_DOCUMENTS) or {}).get(job.id)
    return found if found is not None and found.version == job.version else None


@dataclass(frozen=True)
class Entry:
    """What a poll reads: ``body`` is None when the client's ETag matched (it was not read)."""

    owner_id: str
    status: str
    etag: str
    body: bytes | None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


def build_mirror(redis_url: str | None, poll: PollSettings) -> JobMirror | None:
    """The mirror when Redis is configured; without it every read goes to the database."""
    if not redis_url:
        return None
    return JobMirror(redis_url, ttl_s=poll.document_ttl_s)


class JobMirror:
    """Reads and writes the job documents kept in Redis (one client per process)."""

    def __init__(self, redis_url: str, *, ttl_s: int) -> None:
        self._redis_url = redis_url
        self.ttl_s = ttl_s
        self._client: Any = None
        self._lock = threading.Lock()
        self._unsynced: set[str] = set()

    def client(self) -> Any:
        if self._client is None:
            import redis

            # Short timeouts: a poll falls back to the database rather than wait on Redis.
            self._client = redis.Redis.from_url(
                self._redis_url, socket_connect_timeout=1, socket_timeout=1
            )
        return self._client

    # --- writing (after commit) -------------------------------------------------------------

    def queue_writes(self, pipe: Any, documents: Iterable[JobDocument],
                     gone: Iterable[uuid.UUID] = ()) -> list[str]:
        """Add the guarded writes to ``pipe``, and the deletes of deleted jobs' entries and of
        those an earlier failure left behind; returns the job ids to pass to ``failed`` if the
        pipeline fails."""
        with self._lock:
            stale, self._unsynced = self._unsynced, set()
        stale.update(str(job_id) for job_id in gone)
        for job_id in stale:
            pipe.delete(key(job_id))
        queued = list(stale)
        for doc in documents:
            pipe.eval(_WRITE, 1, key(doc.job_id), doc.version, str(doc.owner_id), doc.status,
                      doc.etag, doc.body, self.ttl_for(doc.status))
            queued.append(str(doc.job_id))
        return queued

    def ttl_for(self, status: str) -> int:
        """A finished job's document lives ``ttl_s``; an unfinished one's at most
        ``LIVE_TTL_S``: a process killed between its commit and its write can then leave a
        live job looking as it was for that long at most, not for ``ttl_s`` (its next
        transition, or the first poll after the expiry, writes it again)."""
        return self.ttl_s if status in TERMINAL_STATUSES else min(self.ttl_s, LIVE_TTL_S)

    def write(self, document: JobDocument) -> None:
        """Write one document now, guarded like the others (a poll that read the database)."""
        try:
            pipe = self.client().pipeline(transaction=False)
            queued = self.queue_writes(pipe, [document])
            try:
                pipe.execute()
            except Exception:
                self.failed(queued)
                raise
        except Exception as exc:
            log.warning("job document write failed", extra={"error": type(exc).__name__})

    def failed(self, job_ids: Iterable[uuid.UUID | str]) -> None:
        """The pipeline failed: these entries may be older than the database."""
        with self._lock:
            if len(self._unsynced) < MAX_UNSYNCED:
                self._unsynced.update(str(job_id) for job_id in job_ids)

    # --- reading (the API) ------------------------------------------------------------------

    def lookup(self, job_id: uuid.UUID, etags: frozenset[str] | None = None) -> Entry | None:
        """The job's entry, without its document when ``etags`` holds its ETag (``*``: any);
        None when there is none or Redis cannot be reached (the caller reads the database)."""
        name = key(job_id)
        try:
            if etags is None:
                owner, status, etag, body = self.client().hmget(
                    name, "owner", "status", "etag", "doc")
            else:
                owner, status, etag = self.client().hmget(name, "owner", "status", "etag")
                body = None
                if owner is not None and "*" not in etags and etag.decode() not in etags:
                    body = self.client().hget(name, "doc")
                    if body is None:  # expired between the two reads
                        return None
        except Exception as exc:
            log.warning("job document lookup failed", extra={"error": type(exc).__name__})
            return None
        if owner is None or (etags is None and body is None):
            return None
        return Entry(owner.decode(), status.decode(), etag.decode(), body)

    def status(self, job_id: uuid.UUID) -> str | None:
        """The job's status as last written, None on a miss."""
        return self._field(job_id, "status")

    def owner(self, job_id: uuid.UUID) -> str | None:
        """The id of the job's owner, None on a miss."""
        return self._field(job_id, "owner")

    def _field(self, job_id: uuid.UUID, name: str) -> str | None:
        try:
            value = self.client().hget(key(job_id), name)
        except Exception as exc:
            log.warning("job document lookup failed", extra={"error": type(exc).__name__})
            return None
        return value.decode() if value is not None else None
