"""Build a story version from a space's moments as the model streams it: each chapter is saved,
published and handed to its illustration jobs the moment it is complete, while the rest of the
story is still being written."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import selectinload

from agents.types import (
    STORY_SETTINGS_KEYS,
    ChapterDraft,
    NoteInput,
    StoryRestart,
    StoryResult,
    StorySettings,
    StoryStreamItem,
)
from models import Chapter, Job, Note, Space, Story
from models.db import database_unavailable
from workers.app import celery_app
from workers.attempt import JobFailed, JobRun, MustWait, usage_dict
from workers.cache import JOIN_POLL_S, cache_key, lookup_or_lease, release, store
from workers.dispatch import create_job
from workers.events import emit
from workers.fanout import illustration_variants, is_illustrations_only, missing_illustrations
from workers.job_mirror import touch
from workers.parents import on_child_finished
from workers.runner import run_job

log = logging.getLogger(__name__)


def story_settings(data: dict[str, Any]) -> StorySettings:
    return StorySettings(
        **{attr: data[key] for key, attr in STORY_SETTINGS_KEYS.items() if key in data}
    )


def note_input(note: Note) -> NoteInput:
    audio = [m for m in note.media if m.kind == "audio"]
    return NoteInput(
        id=str(note.id),
        timestamp_ms=note.timestamp_ms,
        title=note.title,
        text_content=note.text_content,
        transcriptions=tuple(m.transcription for m in audio if m.transcription),
        image_count=sum(1 for m in note.media if m.kind == "image"),
    )


def create_illustration_job(run: JobRun, chapter: Chapter, story: Story, variant: int,
                            variants: int, *, style: str) -> Job:
    """One image of a chapter, drawn by a child of the running story job."""
    return create_job(
        run.session, owner_id=run.job.owner_id, kind="illustration", parent_id=run.job.id,
        input={"prompt": chapter.illustration_prompt, "style": style,
               "chapterId": str(chapter.id), "storyId": str(story.id),
               "variant": variant, "variants": variants},
        max_attempts=run.context.settings.attempts_for("illustration"),
        queue="batch" if run.job.queue == "batch" else None,  # a batch's images wait their turn
    )


def chapter_event(chapter: Chapter) -> dict[str, Any]:
    """A chapter as the frontend's Chapter type, for the job's event stream."""
    return {
        "id": str(chapter.id),
        "position": chapter.position,
        "title": chapter.title,
        "content": chapter.content,
        "illustrationPrompt": chapter.illustration_prompt,
        "sourceNoteId": str(chapter.source_note_id) if chapter.source_note_id else None,
        "userImageIds": chapter.user_image_ids,
        "generatedImageUrl": chapter.generated_image_url,
    }


class StoryWriter:
    """Writes one story version chapter by chapter; each chapter commits with its
    illustration jobs, whose messages go out right after."""

    def __init__(self, run: JobRun, space: Space, notes: list[Note], settings: StorySettings):
        self.run = run
        self.session = run.session
        self.job = run.job
        self.note_count = len(notes)
        self.settings = settings
        self.images_by_note = {
            str(n.id): [str(m.id) for m in n.media if m.kind == "image"] for n in notes
        }
        # An earlier attempt of this job may have written part of a version: start over.
        self.drop_illustration_jobs()
        self.session.execute(delete(Story).where(Story.job_id == self.job.id))
        # Lock the space until this version's row commits: concurrent regenerations of one
        # space take the next version numbers one after the other instead of colliding.
        self.session.execute(select(Space.id).where(Space.id == space.id).with_for_update())
        latest = self.session.scalar(
            select(func.max(Story.version)).where(Story.space_id == space.id)
        )
        self.story = Story(space_id=space.id, version=(latest or 0) + 1, job_id=self.job.id,
                           settings=self.job.input.get("settings", {}), status="writing")
        self.session.add(self.story)
        self.chapters: list[Chapter] = []
        self.run.progress("writing", 0, self.note_count)

    def drop_illustration_jobs(self) -> None:
        for job_id in self.session.scalars(
            delete(Job).where(Job.parent_id == self.job.id).returning(Job.id)
        ):
            touch(self.session, job_id)  # gone: its document in Redis goes too

    def add(self, draft: ChapterDraft) -> None:
        self.run.check_cancel()
        user_images = self.images_by_note.get(draft.source_note_id or "", [])
        chapter = Chapter(
            id=uuid.uuid4(), story_id=self.story.id, position=len(self.chapters),
            title=draft.title, content=draft.content,
            illustration_prompt=draft.illustration_prompt,
            source_note_id=uuid.UUID(draft.source_note_id) if draft.source_note_id else None,
            user_image_ids=user_images,
        )
        self.session.add(chapter)
        self.chapters.append(chapter)
        variants = illustration_variants(user_images, draft.illustration_prompt,
                                         self.settings.images_per_chapter)
        for variant in range(variants):
            create_illustration_job(self.run, chapter, self.story, variant, variants,
                                    style=self.settings.image_style)
        self.session.flush()
        emit(self.session, self.job.id, "chapter", chapter_event(chapter))
        self.run.progress("writing", len(self.chapters), self.note_count)  # commits

    def restart(self, reason: str) -> None:
        """The model is writing the story again: what it wrote so far is discarded."""
        self.drop_illustration_jobs()
        self.session.execute(delete(Chapter).where(Chapter.story_id == self.story.id))
        self.chapters = []
        emit(self.session, self.job.id, "restart", {"reason": reason})
        self.run.progress("writing", 0, self.note_count)

    def finish(self, usage: dict[str, Any] | None, cached: bool) -> None:
        """The text is complete: wait for the illustrations (or finish now if there are none)."""
        self.run.check_cancel()
        self.story.status = "illustrating"
        self.session.execute(
            update(Job).where(Job.id == self.job.id, Job.attempts == self.job.attempts)
            .values(usage=usage, result={"cached": cached})
        )
        self.run.progress("images", 0, 0)  # commits; the children's counts follow
        on_child_finished(self.session, self.job.id)


def redraw_missing_illustrations(run: JobRun) -> None:
    """Draw again only the images a published version lacks; its text and the chapters that
    have their images stay as they are. Finishes through the fan-out like a story."""
    session, job = run.session, run.job
    story = session.get(Story, uuid.UUID(job.input["storyId"]))
    if story is None or str(story.space_id) != job.input["spaceId"]:
        raise JobFailed("not_found", "the story version no longer exists")
    space = session.get(Space, story.space_id)
    if space is None or space.owner_id != job.owner_id:
        raise JobFailed("not_found", "the space no longer exists")
    run.check_cancel()
    # A retried or redelivered attempt keeps the children the first one made (some may be
    # drawn already) rather than drawing the same images twice.
    total = session.scalar(select(func.count()).where(Job.parent_id == job.id)) or 0
    if not total:
        style = story_settings(story.settings).image_style
        missing = missing_illustrations(story)
        for chapter, variant, variants in missing:
            create_illustration_job(run, chapter, story, variant, variants, style=style)
        total = len(missing)
    run.progress("images", 0, total)  # commits the children with the step that awaits them
    on_child_finished(session, job.id)  # none to draw, or all drawn already: finishes now


def build_story(run: JobRun) -> None:
    session, job = run.session, run.job
    if is_illustrations_only(job):
        redraw_missing_illustrations(run)
        return
    space_id = uuid.UUID(job.input["spaceId"])
    space = session.get(Space, space_id)
    if space is None or space.owner_id != job.owner_id:
        raise JobFailed("not_found", "the space no longer exists")
    settings = story_settings(job.input.get("settings", {}))
    notes = list(
        session.scalars(
            select(Note)
            .where(Note.space_id == space_id)
            .options(selectinload(Note.media))
            .order_by(Note.timestamp_ms)
        )
    )
    if not notes:
        raise JobFailed("no_notes", "the space has no moments to tell a story from")
    run.progress("analyzing", 0, len(notes))
    inputs = [note_input(n) for n in notes]
    builder = run.context.provider.story_builder

    # The same moments, title and settings with the same model and prompt: the same text.
    key = cache_key("story", builder.model, builder.prompt_version, {
        "title": space.title, "settings": dataclasses.asdict(settings),
        "notes": [dataclasses.asdict(n) for n in inputs],
    })
    found = lookup_or_lease(session, key, agent="story", model=builder.model, job_id=job.id,
                            force=bool(job.input.get("force")))
    if found.value is None and not found.owner:
        raise MustWait(JOIN_POLL_S, step="waiting_for_identical_job")
    try:
        # The cache's answer, or the one an earlier run of this job paid for and lost.
        answer = found.value if found.value is not None else run.kept_answer(key)
        if answer is not None:
            writer = StoryWriter(run, space, notes, settings)
            for chapter in answer["chapters"]:
                writer.add(ChapterDraft(**chapter))
            if found.value is None:  # this job's own answer: published as a fresh one is
                store(session, key, answer, agent="story", model=builder.model,
                      ttl_s=run.context.settings.cache_ttl_s)
            writer.finish(None if found.value is not None else answer["usage"],
                          cached=found.value is not None)
            return
        # ~4 characters a token in, and a story about as long as its notes plus instructions.
        chars = sum(len(n.text_content or "") + sum(map(len, n.transcriptions)) for n in inputs)
        estimate = chars // 2 + 2000
        run.acquire_upstream(builder.model, estimate)
        writer = StoryWriter(run, space, notes, settings)
        final: StoryResult | None = None
        stream = builder.stream(inputs, space.title, settings)
        try:
            for item in stream:
                if isinstance(item, ChapterDraft):
                    writer.add(item)
                elif isinstance(item, StoryRestart):
                    writer.restart(item.reason)
                else:
                    final = item
        except Exception as exc:
            if database_unavailable(exc):
                keep_rest_of_story(run, key, estimate, stream)
            raise
        if final is None:
            raise JobFailed("invalid_model_output", "the story ended without a result",
                            retryable=True)
        answer = keep_story_answer(run, key, estimate, final)
        store(session, key, answer, agent="story", model=builder.model,
              ttl_s=run.context.settings.cache_ttl_s)
        writer.finish(answer["usage"], cached=False)
    except BaseException:
        if found.value is None:
            session.rollback()
            release(session, key, job.id)
        raise


def keep_story_answer(run: JobRun, key: str, estimate: int, final: StoryResult) -> dict[str, Any]:
    """Charge the story's call and keep its answer until the job commits (workers/answers.py)."""
    run.settle_upstream(run.context.provider.story_builder.model, estimate, final.usage)
    answer = {"chapters": [dataclasses.asdict(c) for c in final.chapters],
              "usage": usage_dict(final.usage)}
    run.keep_answer(key, answer)
    return answer


def keep_rest_of_story(run: JobRun, key: str, estimate: int,
                       stream: Iterator[StoryStreamItem]) -> None:
    """The database went away mid-story, but the model is still writing it, and it is paid
    for: read it to the end and keep it for the run of this job that follows."""
    try:
        final = next((item for item in stream if isinstance(item, StoryResult)), None)
    except Exception as exc:  # its answer was unusable after all: nothing to keep
        log.info("story answer not kept", extra={"job_id": str(run.job.id),
                                                 "error": type(exc).__name__})
        return
    if final is not None:
        keep_story_answer(run, key, estimate, final)


@celery_app.task(name="lifetales.build_story", acks_late=True, ignore_result=True)
def build_story_task(job_id: str) -> None:
    run_job(job_id, build_story)
