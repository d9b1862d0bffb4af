"""Content-addressed caching of agent results, with identical work in flight joined.

A key is the sha256 of (agent, model, prompt version, normalized input): a new prompt version or
model never reads an old answer. The first job to need a key takes a lease (a ``pending`` row);
an identical job arriving meanwhile is re-scheduled to read the result instead of calling the
model again. A lease whose job died expires and is taken over.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, null, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

import telemetry
from models import CacheEntry
from models.base import utcnow
from workers.attempt import JobRun, MustWait
from workers.lifecycle import affected

# Core statements on the table (less Python per statement than the ORM-enabled forms).
ENTRIES = cast(Table, CacheEntry.__table__)
LEASE_S = 120  # longer than any single agent call (60 s story) plus slack
JOIN_POLL_S = 1.0  # how soon a joined job looks again


def cache_key(agent: str, model: str, prompt_version: str, payload: Any) -> str:
    canonical = json.dumps(
        {"agent": agent, "model": model, "prompt": prompt_version, "input": payload},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Lookup:
    """``value`` on a hit; ``owner`` True when this job must compute it (and then store it);
    otherwise another job is computing it right now: wait and look again."""

    value: dict[str, Any] | None
    owner: bool


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


# The two statements of every job that uses the cache, built once per dialect (bound values).
@functools.cache
def _lease_statement(insert: Any) -> Any:
    return insert(ENTRIES).values(
        key=bindparam("e_key"), agent=bindparam("e_agent"), model=bindparam("e_model"),
        status="pending", value=null(), owner_job_id=bindparam("e_job"),
        lease_expires_at=bindparam("e_until"), created_at=bindparam("e_now"),
    ).on_conflict_do_nothing(index_elements=["key"])


@functools.cache
def _store_statement(insert: Any) -> Any:
    values = {"status": "ready", "value": bindparam("e_value", type_=ENTRIES.c.value.type),
              "owner_job_id": null(), "lease_expires_at": null(),
              "created_at": bindparam("e_now"), "expires_at": bindparam("e_expires")}
    statement = insert(ENTRIES).values(key=bindparam("e_key"), agent=bindparam("e_agent"),
                                       model=bindparam("e_model"), **values)
    return statement.on_conflict_do_update(index_elements=["key"], set_=values)


def lookup_or_lease(
    session: Session, key: str, *, agent: str, model: str, job_id: uuid.UUID, force: bool
) -> Lookup:
    """Read a fresh entry, or take the lease to compute it. Commits the lease (a hit leaves
    the caller's transaction open: the job's result follows at once).

    ``force`` bypasses reading (and leasing): the job computes and overwrites the entry.
    """
    if force:
        telemetry.record_cache_lookup(agent, "bypass")
        return Lookup(None, owner=True)
    now = utcnow()
    lease_until = now + timedelta(seconds=LEASE_S)
    # Most keys are new: try the lease first, one statement for a miss.
    won = cast(CursorResult[Any], session.execute(_lease_statement(_insert(session)), {
        "e_key": key, "e_agent": agent, "e_model": model, "e_job": job_id,
        "e_until": lease_until, "e_now": now})).rowcount
    if not won:
        entry = session.get(CacheEntry, key, populate_existing=True)
        if entry is not None and entry.status == "ready" and (
            entry.expires_at is None or entry.expires_at > now
        ):
            telemetry.record_cache_lookup(agent, "hit")
            return Lookup(entry.value, owner=False)
        # Expired, or a pending lease whose job is gone (or is this very job, retried).
        won = affected(session, update(CacheEntry).where(
            CacheEntry.key == key,
            or_(
                CacheEntry.status == "ready",
                CacheEntry.lease_expires_at < now,
                CacheEntry.owner_job_id == job_id,
            ),
        ).values(status="pending", owner_job_id=job_id, lease_expires_at=lease_until))
    session.commit()
    telemetry.record_cache_lookup(agent, "miss" if won else "joined")
    return Lookup(None, owner=bool(won))


def store(
    session: Session, key: str, value: dict[str, Any], *, agent: str, model: str, ttl_s: int
) -> None:
    """Publish the computed value (in the caller's transaction, with the job's result)."""
    now = utcnow()
    session.execute(_store_statement(_insert(session)), {
        "e_key": key, "e_agent": agent, "e_model": model, "e_value": value, "e_now": now,
        "e_expires": now + timedelta(seconds=ttl_s)})


def release(session: Session, key: str, job_id: uuid.UUID) -> None:
    """Give the lease back after a failure so a joined job can compute it itself."""
    session.execute(delete(CacheEntry).where(
        CacheEntry.key == key, CacheEntry.status == "pending", CacheEntry.owner_job_id == job_id
    ))
    session.commit()


def cached_result(
    run: JobRun,
    *,
    agent: str,
    model: str,
    prompt_version: str,
    payload: Any,
    compute: Callable[[], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """(value, cached): the cached value, or ``compute()``'s, stored for the next identical job.

    Identical work already in flight is joined: this job is re-scheduled until it is done.
    ``compute`` makes the paid call and must not touch the database: its answer is kept in
    Redis before anything is written, so a run of this job that follows a lost commit reads
    it instead of paying again.
    """
    key = cache_key(agent, model, prompt_version, payload)
    found = lookup_or_lease(run.session, key, agent=agent, model=model, job_id=run.job.id,
                            force=bool(run.job.input.get("force")))
    if found.value is not None:
        return found.value, True
    if not found.owner:
        raise MustWait(JOIN_POLL_S, step="waiting_for_identical_job")
    run.session.commit()  # hold no transaction (or row lock) across the model call
    try:
        value = run.kept_answer(key)
        if value is None:
            value = compute()
            run.keep_answer(key, value)
    except BaseException:
        run.session.rollback()
        release(run.session, key, run.job.id)
        raise
    store(run.session, key, value, agent=agent, model=model,
          ttl_s=run.context.settings.cache_ttl_s)
    return value, False
