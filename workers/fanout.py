"""A story job fans out one illustration job per chapter and finishes when the last one does."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import TERMINAL_STATUSES, Job, Space, Story
from models.base import utcnow
from workers.lifecycle import affected


def child_counts(session: Session, parent_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count()).where(Job.parent_id == parent_id).group_by(Job.status)
    ).all()
    return {status: count for status, count in rows}


def on_child_finished(session: Session, parent_id: uuid.UUID) -> None:
    """Advance the parent's progress; the child that finishes last completes the parent.

    Runs after the child's own commit, so the last child to commit always sees every sibling
    finished; the parent's fenced update makes a second completion a no-op.
    """
    parent = session.get(Job, parent_id, populate_existing=True)
    if parent is None or parent.status != "running":
        return
    counts = child_counts(session, parent_id)
    total = sum(counts.values())
    finished = sum(n for status, n in counts.items() if status in TERMINAL_STATUSES)
    now = utcnow()
    if finished < total:
        session.execute(
            update(Job)
            .where(Job.id == parent_id, Job.status == "running")
            .values(
                progress={"step": "images", "current": finished, "total": total},
                heartbeat_at=now,
                updated_at=now,
            )
        )
        session.commit()
        return
    complete_story(session, parent, counts)


def complete_story(session: Session, parent: Job, counts: dict[str, int]) -> bool:
    """Publish the story version and finish its job, in one transaction."""
    story = session.scalar(select(Story).where(Story.job_id == parent.id))
    if story is None:
        return False
    now = utcnow()
    if parent.cancel_requested:
        # Canceled while its illustrations ran: the version is dropped, never published.
        if not affected(session, update(Job)
                        .where(Job.id == parent.id, Job.status == "running",
                               Job.attempts == parent.attempts)
                        .values(status="canceled", finished_at=now, updated_at=now,
                                error={"code": "canceled", "message": "the job was canceled",
                                       "retryable": False})):
            session.rollback()
            return False
        story.status = "canceled"
        session.commit()
        return True
    succeeded = counts.get("succeeded", 0)
    total = sum(counts.values())
    result: dict[str, Any] = {
        "spaceId": str(story.space_id),
        "storyId": str(story.id),
        "version": story.version,
        "chapterCount": len(story.chapters),
        "illustrations": {
            "total": total,
            "succeeded": succeeded,
            "failed": counts.get("failed", 0),
            "canceled": counts.get("canceled", 0),
        },
    }
    done = affected(
        session,
        update(Job)
        .where(Job.id == parent.id, Job.status == "running", Job.attempts == parent.attempts)
        .values(
            status="succeeded",
            result=result,
            error=None,
            finished_at=now,
            heartbeat_at=now,
            updated_at=now,
            progress={"step": "done", "current": total, "total": total},
        ),
    )
    if not done:
        session.rollback()
        return False
    story.status = "ready"
    story.generated_at = now
    # The newest finished version wins, even if an older regeneration finishes after it.
    session.execute(
        update(Space)
        .where(Space.id == story.space_id)
        .where(
            (Space.current_story_version.is_(None)) | (Space.current_story_version < story.version)
        )
        .values(current_story_version=story.version)
    )
    session.commit()
    return True
