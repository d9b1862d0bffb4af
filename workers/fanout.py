"""A story job fans out illustration jobs as its chapters arrive and finishes when the last one
does, once the text is complete (story status ``illustrating``)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import TERMINAL_STATUSES, Job, Space, Story
from models.base import utcnow
from workers.events import emit, final_events
from workers.lifecycle import CANCELED, affected


def child_counts(session: Session, parent_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count()).where(Job.parent_id == parent_id).group_by(Job.status)
    ).all()
    return {status: count for status, count in rows}


def on_child_finished(session: Session, parent_id: uuid.UUID) -> None:
    """Advance the parent's progress; once its text is written, the last child completes it.

    Runs after the child's own commit (and once by the story itself when its text is done), so
    whoever commits last sees every sibling finished; the fenced update makes a second
    completion a no-op.
    """
    parent = session.get(Job, parent_id, populate_existing=True)
    if parent is None or parent.status != "running":
        return
    story = session.scalar(select(Story).where(Story.job_id == parent_id))
    if story is None or story.status != "illustrating":
        return  # still writing: the story job settles itself when its text is complete
    counts = child_counts(session, parent_id)
    total = sum(counts.values())
    finished = sum(n for status, n in counts.items() if status in TERMINAL_STATUSES)
    if finished < total:
        progress = {"step": "images", "current": finished, "total": total}
        if affected(
            session,
            update(Job)
            .where(Job.id == parent_id, Job.status == "running")
            .values(progress=progress, heartbeat_at=utcnow(), updated_at=utcnow()),
        ):
            emit(session, parent_id, "progress", progress)
        session.commit()
        return
    complete_story(session, parent, story, counts)


def abandon_story_attempt(session: Session, parent_id: uuid.UUID) -> None:
    """The story job stopped without completing (retry, failure, cancel): stop its
    illustrations and mark its half-written version so it is never shown."""
    now = utcnow()
    queued = list(session.scalars(
        update(Job).where(Job.parent_id == parent_id, Job.status == "queued")
        .values(status="canceled", cancel_requested=True, error=CANCELED, finished_at=now,
                updated_at=now)
        .returning(Job.id).execution_options(synchronize_session=False)
    ))
    for job_id in queued:
        final_events(session, job_id, "canceled", error=CANCELED)
    session.execute(
        update(Job).where(Job.parent_id == parent_id, Job.status == "running")
        .values(cancel_requested=True, updated_at=now)
    )
    session.execute(
        update(Story).where(Story.job_id == parent_id, Story.status.in_(("writing",)))
        .values(status="failed")
    )
    session.commit()


def complete_story(session: Session, parent: Job, story: Story, counts: dict[str, int]) -> bool:
    """Publish the story version and finish its job, in one transaction (or drop it if the job
    was canceled meanwhile)."""
    now = utcnow()
    fence = update(Job).where(
        Job.id == parent.id, Job.status == "running", Job.attempts == parent.attempts
    )
    if parent.cancel_requested:
        if not affected(session, fence.values(status="canceled", finished_at=now,
                                              updated_at=now, error=CANCELED)):
            session.rollback()
            return False
        story.status = "canceled"
        final_events(session, parent.id, "canceled", error=CANCELED)
        session.commit()
        return True
    total = sum(counts.values())
    result: dict[str, Any] = {
        **(parent.result or {}),  # what the writing step recorded (e.g. cached)
        "spaceId": str(story.space_id),
        "storyId": str(story.id),
        "version": story.version,
        "chapterCount": len(story.chapters),
        "illustrations": {
            "total": total,
            "succeeded": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "canceled": counts.get("canceled", 0),
        },
    }
    progress = {"step": "done", "current": total, "total": total}
    if not affected(session, fence.values(status="succeeded", result=result, error=None,
                                          finished_at=now, heartbeat_at=now, updated_at=now,
                                          progress=progress)):
        session.rollback()
        return False
    story.status = "ready"
    story.generated_at = now
    # The newest finished version wins, even if an older regeneration finishes after it.
    session.execute(
        update(Space)
        .where(Space.id == story.space_id)
        .where(
            (Space.current_story_version.is_(None))
            | (Space.current_story_version < story.version)
        )
        .values(current_story_version=story.version)
    )
    emit(session, parent.id, "progress", progress)
    final_events(session, parent.id, "succeeded", result=result)
    session.commit()
    return True
