"""A story job fans out illustration jobs as its chapters arrive and finishes when the last one
does, once the text is complete (story status ``illustrating``).

A story whose illustrations partly failed still succeeds, with its chapters and a per-chapter
error list; an *illustrations-only* story job (``input.mode == "illustrations"``) later draws
just the missing ones for the published version, through the same fan-out.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import TERMINAL_STATUSES, Chapter, Job, Space, Story
from models.base import utcnow
from workers.events import emit, final_events
from workers.lifecycle import CANCELED, affected, ask_to_stop

ILLUSTRATIONS_ONLY = "illustrations"  # input.mode of a story job that only redraws images


def illustration_variants(user_image_ids: list[Any], prompt: str | None,
                          images_per_chapter: int) -> int:
    """How many images a chapter gets drawn: none when it carries the user's own photos (as the
    frontend does) or has no prompt."""
    return 0 if user_image_ids or not prompt else images_per_chapter


def missing_illustrations(story: Story) -> list[tuple[Chapter, int, int]]:
    """(chapter, variant, variants) of every image the version should have and lacks."""
    per_chapter = int((story.settings or {}).get("imagesPerChapter", 1))
    missing = []
    for chapter in story.chapters:
        urls: list[Any] = list(chapter.generated_image_urls or [chapter.generated_image_url])
        variants = illustration_variants(
            chapter.user_image_ids, chapter.illustration_prompt,
            len(chapter.generated_image_urls or []) or per_chapter,
        )
        urls += [None] * (variants - len(urls))
        missing += [(chapter, v, variants) for v in range(variants) if not urls[v]]
    return missing


def is_illustrations_only(job: Job) -> bool:
    return job.kind == "story" and (job.input or {}).get("mode") == ILLUSTRATIONS_ONLY


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
    if parent.kind == "story_batch":  # a batch finishes by its own rules
        from workers.batch import settle_batch

        settle_batch(session, parent_id)
        return
    if is_illustrations_only(parent):
        story = session.get(Story, uuid.UUID(parent.input["storyId"]))
        # Its children commit together with the step ``images``; before that, nothing to do.
        if story is None or (parent.progress or {}).get("step") != "images":
            return
    else:
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
    if is_illustrations_only(parent):
        complete_illustrations_only(session, parent, story, counts)
    elif complete_story(session, parent, story, counts) and parent.parent_id is not None:
        on_child_finished(session, parent.parent_id)  # a batch's story: the batch counts it


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
    ask_to_stop(session, Job.parent_id == parent_id)
    session.execute(
        update(Story).where(Story.job_id == parent_id, Story.status.in_(("writing",)))
        .values(status="failed")
    )
    session.commit()


def illustration_outcomes(
    session: Session, parent_id: uuid.UUID
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(errors, drawn) of a story job's illustration children, per chapter and variant, in
    chapter order: what did not get drawn (with why) and what did."""
    children = session.execute(
        select(Job.status, Job.input, Job.error)
        .where(Job.parent_id == parent_id, Job.kind == "illustration")
    ).all()
    chapter_ids = {uuid.UUID(spec["chapterId"]) for _, spec, _ in children
                   if spec.get("chapterId")}
    positions = {
        str(chapter_id): position for chapter_id, position in session.execute(
            select(Chapter.id, Chapter.position).where(Chapter.id.in_(chapter_ids))
        )
    } if chapter_ids else {}
    errors: list[dict[str, Any]] = []
    drawn: list[dict[str, Any]] = []
    for status, spec, error in children:
        where = {"chapterId": spec.get("chapterId"),
                 "chapterIndex": positions.get(spec.get("chapterId", "")),
                 "variant": int(spec.get("variant", 0))}
        if status == "succeeded":
            drawn.append(where)
            continue
        error = error or {}
        errors.append(where | {
            "code": error.get("code", status),
            "message": error.get("message", f"the illustration was {status}"),
        })

    def order(item: dict[str, Any]) -> tuple[int, int]:
        return (item["chapterIndex"] if item["chapterIndex"] is not None else 1 << 30,
                item["variant"])

    return sorted(errors, key=order), sorted(drawn, key=order)


def _illustration_summary(
    session: Session, parent: Job, story: Story, counts: dict[str, int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The result of a story job that waited on illustrations, and what they drew."""
    errors, drawn = illustration_outcomes(session, parent.id)
    return {
        "spaceId": str(story.space_id),
        "storyId": str(story.id),
        "version": story.version,
        "chapterCount": len(story.chapters),
        "illustrations": {
            "total": sum(counts.values()),
            "succeeded": counts.get("succeeded", 0),
            "failed": counts.get("failed", 0),
            "canceled": counts.get("canceled", 0),
        },
        # Partial results are kept: the chapters that got no image, and why.
        "illustrationErrors": errors,
    }, drawn


def _finish_parent(session: Session, parent: Job, result: dict[str, Any] | None,
                   total: int) -> bool:
    """Move the waiting parent to its final status (canceled if asked to stop, else succeeded)
    in the caller's transaction; False (rolled back) if another process got there first."""
    now = utcnow()
    fence = update(Job).where(
        Job.id == parent.id, Job.status == "running", Job.attempts == parent.attempts
    )
    if parent.cancel_requested or result is None:
        if not affected(session, fence.values(status="canceled", finished_at=now,
                                              updated_at=now, error=CANCELED)):
            session.rollback()
            return False
        final_events(session, parent.id, "canceled", error=CANCELED)
        return True
    progress = {"step": "done", "current": total, "total": total}
    if not affected(session, fence.values(status="succeeded", result=result, error=None,
                                          finished_at=now, heartbeat_at=now, updated_at=now,
                                          progress=progress)):
        session.rollback()
        return False
    emit(session, parent.id, "progress", progress)
    final_events(session, parent.id, "succeeded", result=result)
    return True


def complete_story(session: Session, parent: Job, story: Story, counts: dict[str, int]) -> bool:
    """Publish the story version and finish its job, in one transaction (or drop it if the job
    was canceled meanwhile). Failed illustrations do not fail the story: its result lists them."""
    if parent.cancel_requested:
        if not _finish_parent(session, parent, None, 0):
            return False
        story.status = "canceled"
        session.commit()
        return True
    summary, _ = _illustration_summary(session, parent, story, counts)
    result = {**(parent.result or {}), **summary}  # the writing step's (e.g. cached) first
    if not _finish_parent(session, parent, result, sum(counts.values())):
        return False
    story.status = "ready"
    story.generated_at = utcnow()
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
    session.commit()
    return True


def complete_illustrations_only(
    session: Session, parent: Job, story: Story, counts: dict[str, int]
) -> bool:
    """Finish a job that redrew a published version's missing images; the images attached
    themselves to their chapters as they were drawn. Its result says what is now resolved and
    what is still missing."""
    if parent.cancel_requested:
        done = _finish_parent(session, parent, None, 0)
    else:
        summary, resolved = _illustration_summary(session, parent, story, counts)
        result = {**summary, "mode": ILLUSTRATIONS_ONLY, "storyJobId": str(story.job_id),
                  "resolved": resolved}
        done = _finish_parent(session, parent, result, sum(counts.values()))
    if done:
        session.commit()
    return done
