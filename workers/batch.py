"""Batch regeneration of stories: an admin's ``story_batch`` job whose children are ordinary
story jobs on the ``batch`` queue, one per target space, each writing a new story version.

The targets are a frozen selection (space ids, or a filter plus the batch's creation time)
walked in space-id order. The batch task fans them out in chunks: each chunk's child jobs and
the advanced cursor commit in one transaction, fenced on the locked batch row, so a restart
anywhere resumes from the committed cursor and never makes a second child for a space. At most
``window`` children are unfinished at a time; the batch finishes (with its totals) once the
cursor is exhausted and every child is final.

The interactive ``POST /spaces/{id}/story`` builds its job input here too (``story_job_input``):
a batch child is exactly the job a user's regeneration would be.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from agents.config import AgentSettings
from agents.types import STORY_SETTINGS_KEYS, StorySettings
from config import estimated_cost_usd
from models import TERMINAL_STATUSES, Job, Media, Note, Space, UserSettings
from models.base import utcnow
from workers.dispatch import create_job, enqueue_after_commit
from workers.events import emit, final_events, status_event
from workers.job_mirror import touch
from workers.lifecycle import CANCELED, affected, child_counts, request_cancel
from workers.usage import UsageRow, total_cost_usd

KIND = "story_batch"
QUEUE = "batch"
MAX_NOTES_PER_STORY = 200
MAX_SPACE_IDS = 10_000
# Children made per transaction at most (fewer when the window has less room).
CHUNK = 100
# How often a batch that is still fanning out looks for room in its window.
POLL_S = 1.0
# Each redelivery or reaper recovery of the batch task costs one (waiting costs none).
MAX_ATTEMPTS = 10

# Dry-run estimates, per space. Story call: the prompt's instructions and settings plus each
# moment's title, text and transcription in; about one chapter's text out per chapter.
# Illustration call: the prompt in; Gemini bills a generated 1024 px image as 1290 output tokens.
STORY_PROMPT_TOKENS = 1500
STORY_TOKENS_PER_NOTE = 120
STORY_TOKENS_PER_CHAPTER = 350
ILLUSTRATION_PROMPT_TOKENS = 150
IMAGE_OUTPUT_TOKENS = 1290


# --- the story job a regeneration submits (interactive or batch) --------------------------------


def story_job_input(session: Session, *, owner_id: uuid.UUID, space_id: uuid.UUID,
                    overrides: Mapping[str, Any], force: bool) -> dict[str, Any]:
    """A story job's input: the space, and the settings the owner's story is written with."""
    return {"spaceId": str(space_id), "settings": story_settings_for(session, owner_id, overrides),
            "force": force}


def story_settings_for(session: Session, owner_id: uuid.UUID,
                       overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The owner's saved settings (the frontend's defaults where unsaved), then the request's
    camelCase ``overrides``."""
    saved = session.get(UserSettings, owner_id)
    source: object = saved if saved is not None else StorySettings()
    settings = {key: getattr(source, attr) for key, attr in STORY_SETTINGS_KEYS.items()}
    settings.update(overrides)
    return settings


# --- which spaces a batch regenerates ----------------------------------------------------------


def target_query(selection: Mapping[str, Any]) -> Select[uuid.UUID, uuid.UUID]:
    """``(space id, owner id)`` of the selection's spaces that can have a story (1 to
    MAX_NOTES_PER_STORY moments), in id order: the order the cursor walks."""
    notes = select(func.count()).where(Note.space_id == Space.id).scalar_subquery()
    stmt = select(Space.id, Space.owner_id).where(notes >= 1, notes <= MAX_NOTES_PER_STORY)
    if selection.get("spaceIds") is not None:
        stmt = stmt.where(Space.id.in_([uuid.UUID(s) for s in selection["spaceIds"]]))
    if selection.get("userId"):
        stmt = stmt.where(Space.owner_id == uuid.UUID(selection["userId"]))
    if selection.get("updatedBefore"):
        stmt = stmt.where(Space.updated_at < datetime.fromisoformat(selection["updatedBefore"]))
    if selection.get("createdBefore"):
        # Frozen when the batch was made: spaces created later are not part of it.
        stmt = stmt.where(Space.created_at < datetime.fromisoformat(selection["createdBefore"]))
    return stmt.order_by(Space.id)


def frozen_selection(selection: Mapping[str, Any]) -> dict[str, Any]:
    """The selection as the batch keeps it: JSON values, and a filter bounded by now."""
    frozen: dict[str, Any] = {}
    if selection.get("space_ids") is not None:
        frozen["spaceIds"] = sorted({str(s) for s in selection["space_ids"]})
    else:
        if selection.get("user_id") is not None:
            frozen["userId"] = str(selection["user_id"])
        if selection.get("updated_before") is not None:
            frozen["updatedBefore"] = selection["updated_before"].isoformat()
        frozen["all"] = bool(selection.get("all"))
        frozen["createdBefore"] = utcnow().isoformat()
    return frozen


@dataclass(frozen=True)
class BatchEstimate:
    spaces: int
    story_calls: int
    illustration_calls: int
    cost_usd: float

    @property
    def gemini_calls(self) -> int:
        return self.story_calls + self.illustration_calls


def estimate_batch(session: Session, selection: Mapping[str, Any],
                   overrides: Mapping[str, Any], agents: AgentSettings) -> BatchEstimate:
    """What regenerating the selection would cost, before any call (see the token constants;
    answers from the cache are not foreseen, so this is an upper bound)."""
    targets = target_query(selection).subquery()
    photo = exists().where(Media.note_id == Note.id, Media.kind == "image")
    rows = session.execute(
        select(targets.c.owner_id, func.count(Note.id),
               func.count(Note.id).filter(photo))
        .join(Note, Note.space_id == targets.c.id)
        .group_by(targets.c.id, targets.c.owner_id)
    ).all()
    saved: dict[uuid.UUID, dict[str, Any]] = {}
    spaces = story_calls = illustration_calls = 0
    cost = 0.0
    for owner_id, notes, with_photos in rows:
        if owner_id not in saved:
            saved[owner_id] = story_settings_for(session, owner_id, overrides)
        settings = saved[owner_id]
        chapters = estimated_chapters(str(settings["storyMode"]), notes)
        # Chapters carrying the user's own photos get no generated image.
        drawn = round(chapters * (notes - with_photos) / notes)
        images = drawn * int(settings["imagesPerChapter"])
        spaces += 1
        story_calls += 1
        illustration_calls += images
        cost += estimated_cost_usd(
            agents.story.model, STORY_PROMPT_TOKENS + STORY_TOKENS_PER_NOTE * notes,
            STORY_TOKENS_PER_CHAPTER * chapters) or 0.0
        cost += images * (estimated_cost_usd(
            agents.image.model, ILLUSTRATION_PROMPT_TOKENS, IMAGE_OUTPUT_TOKENS) or 0.0)
    return BatchEstimate(spaces, story_calls, illustration_calls, cost)


def estimated_chapters(story_mode: str, notes: int) -> int:
    """Chapters a story mode makes of ``notes`` moments (as the story builder is told)."""
    if story_mode == "clean":
        return max(1, math.ceil(notes / 2))
    if story_mode == "creative":
        return max(2, math.ceil(notes / 2))
    return notes  # transcription, chapter: one section per moment


def count_targets(session: Session, selection: Mapping[str, Any]) -> int:
    counted = select(func.count()).select_from(target_query(selection).order_by(None).subquery())
    return session.scalar(counted) or 0


def create_batch(session: Session, *, owner_id: uuid.UUID, selection: Mapping[str, Any],
                 overrides: Mapping[str, Any], force: bool, targets: int,
                 idempotency_key: str | None = None, request_hash: str | None = None,
                 **job_args: Any) -> Job:
    """Add the queued batch job (``selection`` frozen); its task fans out once this commits.
    ``job_args``: its webhook (``create_job``'s options)."""
    return create_job(
        session, owner_id=owner_id, kind=KIND, queue=QUEUE, max_attempts=MAX_ATTEMPTS,
        input={"selection": dict(selection), "settings": dict(overrides), "force": force,
               "targets": targets},
        idempotency_key=idempotency_key, request_hash=request_hash, **job_args,
    )


# --- fan-out and completion --------------------------------------------------------------------


def fan_out_chunk(session: Session, batch: Job, *, window: int, story_attempts: int) -> str:
    """Create the next chunk of children and advance the cursor in one transaction, fenced on
    the locked batch row. Returns ``stale`` (no longer this attempt's), ``canceled``, ``more``
    (targets left: look again soon) or ``exhausted``."""
    row = session.execute(
        select(Job.status, Job.attempts, Job.cancel_requested, Job.result)
        .where(Job.id == batch.id).with_for_update()
    ).one_or_none()
    if row is None or row.status != "running" or row.attempts != batch.attempts:
        session.rollback()
        return "stale"
    if row.cancel_requested:
        session.rollback()
        return "canceled"
    state = dict(row.result or {})
    if state.get("exhausted"):
        session.rollback()
        return "exhausted"
    room = window - unfinished_children(session, batch.id)
    if room <= 0:
        session.rollback()
        return "more"
    limit = min(room, CHUNK)
    stmt = target_query(batch.input["selection"])
    if state.get("cursor"):
        stmt = stmt.where(Space.id > uuid.UUID(state["cursor"]))
    targets = session.execute(stmt.limit(limit)).all()
    overrides = batch.input.get("settings") or {}
    for space_id, owner_id in targets:
        create_job(session, owner_id=owner_id, kind="story", parent_id=batch.id, queue=QUEUE,
                   input=story_job_input(session, owner_id=owner_id, space_id=space_id,
                                         overrides=overrides,
                                         force=bool(batch.input.get("force"))),
                   max_attempts=story_attempts)
    if targets:
        state["cursor"] = str(targets[-1][0])
    state["created"] = int(state.get("created", 0)) + len(targets)
    state["exhausted"] = len(targets) < limit
    now = utcnow()
    session.execute(update(Job).where(Job.id == batch.id)
                    .values(result=state, heartbeat_at=now, updated_at=now))
    touch(session, batch.id)
    session.commit()  # the children's messages go out now
    return "exhausted" if state["exhausted"] else "more"


def unfinished_children(session: Session, batch_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).where(
        Job.parent_id == batch_id, Job.status.not_in(TERMINAL_STATUSES))) or 0


def child_totals(session: Session, batch_id: uuid.UUID) -> dict[str, int]:
    """Children by status; ``expired`` (never started) counts as canceled."""
    totals = dict.fromkeys(("queued", "running", "succeeded", "failed", "canceled"), 0)
    for status, count in child_counts(session, batch_id).items():
        totals["canceled" if status == "expired" else status] += count
    return totals


def settle_batch(session: Session, batch_id: uuid.UUID) -> bool:
    """Finish the batch if nothing is left to do: every target fanned out (or a cancel asked
    for) and every child final. Called after each child's own commit, so whoever commits last
    sees every sibling finished; the fence makes a second completion a no-op."""
    batch = session.get(Job, batch_id, populate_existing=True)
    if batch is None or batch.kind != KIND or batch.status != "running":
        return False
    if not (batch.result or {}).get("exhausted") and not batch.cancel_requested:
        return False  # still fanning out: the batch task carries on
    if unfinished_children(session, batch.id):
        return False
    # Lock, then look again: a retry-failed may have re-opened children meanwhile.
    batch = session.get(Job, batch_id, populate_existing=True, with_for_update=True)
    if batch is None or batch.status != "running" or unfinished_children(session, batch.id):
        session.rollback()
        return False
    now = utcnow()
    totals = child_totals(session, batch.id)
    rows = batch_usage(session, batch.id)
    result = {**(batch.result or {}), "totals": totals,
              "costUsd": round(total_cost_usd(rows), 6)}
    fence = update(Job).where(Job.id == batch.id, Job.status == "running",
                              Job.attempts == batch.attempts)
    finished = sum(totals.values())
    progress = {"step": "done", "current": finished, "total": finished}
    if batch.cancel_requested:
        if not affected(session, fence.values(status="canceled", result=result, error=CANCELED,
                                              finished_at=now, updated_at=now)):
            session.rollback()
            return False
        final_events(session, batch.id, "canceled", error=CANCELED)
    else:
        if not affected(session, fence.values(status="succeeded", result=result, error=None,
                                              progress=progress, finished_at=now,
                                              heartbeat_at=now, updated_at=now)):
            session.rollback()
            return False
        emit(session, batch.id, "progress", progress)
        final_events(session, batch.id, "succeeded", result=result)
    session.commit()
    return True


# --- operations on a batch ---------------------------------------------------------------------


def lock_batch(session: Session, batch_id: uuid.UUID) -> Job | None:
    """The batch row, locked until the next commit: fan-out, cancel and retry never interleave."""
    return session.scalar(select(Job).where(Job.id == batch_id, Job.kind == KIND)
                          .with_for_update().execution_options(populate_existing=True))


def cancel_batch(session: Session, batch: Job) -> Job:
    """Stop the fan-out and cancel every unfinished child (running ones at their next safe
    point); the batch ends ``canceled`` once the last of them has stopped."""
    lock_batch(session, batch.id)  # a fan-out step in flight commits its chunk first
    request_cancel(session, batch)  # commits
    settle_batch(session, batch.id)
    session.refresh(batch)
    return batch


def retry_failed(session: Session, batch: Job) -> int:
    """Queue the failed children again (the same rows: one job per space, never two at once)
    and re-open the batch if it had finished. Returns how many were re-queued."""
    locked = lock_batch(session, batch.id)
    assert locked is not None
    now = utcnow()
    failed = list(session.scalars(
        update(Job).where(Job.parent_id == batch.id, Job.status == "failed")
        .values(status="queued", attempts=0, error=None, cancel_requested=False,
                started_at=None, finished_at=None, heartbeat_at=None, enqueued_at=now,
                updated_at=now)
        .returning(Job).execution_options(populate_existing=True, synchronize_session=False)
    ))
    for child in failed:
        status_event(session, child.id, "queued", retry="batch retry-failed")
        enqueue_after_commit(session, child)
    if failed and locked.status in TERMINAL_STATUSES:
        # Its task runs again: it finds the cursor exhausted and waits for these children.
        session.execute(update(Job).where(Job.id == batch.id).values(
            status="queued", error=None, finished_at=None, heartbeat_at=None, enqueued_at=now,
            updated_at=now))
        status_event(session, batch.id, "queued", retry="batch retry-failed")
        enqueue_after_commit(session, locked)
    session.commit()
    session.refresh(batch)
    return len(failed)


def batch_usage(session: Session, batch_id: uuid.UUID) -> list[UsageRow]:
    """Model usage of the batch's stories and their illustrations, by agent and model."""
    story = aliased(Job)
    mine = or_(Job.parent_id == batch_id,
               Job.parent_id.in_(select(story.id).where(story.parent_id == batch_id)))
    model = Job.usage["model"].as_string()
    rows = session.execute(
        select(Job.kind, model, func.count(), func.sum(Job.usage["calls"].as_integer()),
               func.sum(Job.usage["inputTokens"].as_integer()),
               func.sum(Job.usage["outputTokens"].as_integer()))
        .where(and_(mine, Job.usage.is_not(None))).group_by(Job.kind, model)
    ).all()
    return [UsageRow(kind, model_name or "unknown", jobs, int(calls or 0), int(tokens_in or 0),
                     int(tokens_out or 0))
            for kind, model_name, jobs, calls, tokens_in, tokens_out in rows]


def batch_report(session: Session, batch: Job) -> dict[str, Any]:
    """Where a batch stands: totals by status (targets not fanned out yet count as queued, or
    as canceled once the batch has stopped),
    the finished fraction, the time left at the rate children have finished so far, and the
    estimated cost of the calls made so far."""
    state = batch.result or {}
    totals = child_totals(session, batch.id)
    created = sum(totals.values())
    target = created if state.get("exhausted") else max(int(batch.input.get("targets", 0)),
                                                         created)
    stopped = batch.status in TERMINAL_STATUSES or batch.cancel_requested
    totals["canceled" if stopped else "queued"] += target - created  # never fanned out
    finished = totals["succeeded"] + totals["failed"] + totals["canceled"]
    first_child = session.scalar(select(func.min(Job.created_at))
                                 .where(Job.parent_id == batch.id))
    remaining: float | None = None
    if batch.status in TERMINAL_STATUSES or finished >= target:
        remaining = 0.0
    elif finished and first_child is not None:
        elapsed = (utcnow() - first_child).total_seconds()
        remaining = round((target - finished) * elapsed / finished, 1)
    rows = batch_usage(session, batch.id)
    return {
        "total": target,
        "fanned_out": created,
        "totals": totals,
        "percent_done": round(100 * finished / target, 2) if target else 100.0,
        "estimated_seconds_remaining": remaining,
        "cost_usd": round(total_cost_usd(rows), 6),
        "calls": sum(row.calls for row in rows),
    }
