"""Build a story version from a space's moments, then fan out its chapter illustrations."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from agents.types import NoteInput, StorySettings
from models import Chapter, Job, Note, Space, Story
from workers.app import celery_app
from workers.dispatch import create_job
from workers.fanout import complete_story
from workers.runner import JobFailed, JobRun, run_job, usage_dict

SETTINGS_FIELDS = {
    "narrativeTone": "narrative_tone",
    "storyMode": "story_mode",
    "creativity": "creativity",
    "imageStyle": "image_style",
    "imagesPerChapter": "images_per_chapter",
    "voiceStyle": "voice_style",
    "backgroundMusic": "background_music",
}


def story_settings(data: dict[str, Any]) -> StorySettings:
    return StorySettings(
        **{attr: data[key] for key, attr in SETTINGS_FIELDS.items() if key in data}
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


def build_story(run: JobRun) -> None:
    session, job = run.session, run.job
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
    run.progress("writing", 0, len(notes))
    builder = run.context.provider.story_builder
    context_chars = sum(len(n.text_content or "") + sum(map(len, n.transcriptions)) for n in inputs)
    result = run.call_upstream(
        builder.model,
        # ~4 characters a token in, and a story about as long as its notes plus instructions.
        context_chars // 2 + 2000,
        lambda: builder.build(inputs, space.title, settings),
    )
    run.check_cancel()

    # Chapters, children and the version commit together below (run.progress or
    # complete_story), so no later attempt ever finds a half-written version of this job;
    # stories.job_id is unique besides.
    latest = session.scalar(select(func.max(Story.version)).where(Story.space_id == space_id))
    story = Story(
        space_id=space_id,
        version=(latest or 0) + 1,
        job_id=job.id,
        settings=job.input.get("settings", {}),
        status="writing",
    )
    session.add(story)
    session.flush()

    images_by_note = {str(n.id): [str(m.id) for m in n.media if m.kind == "image"] for n in notes}
    style = settings.image_style
    children = 0
    for position, draft in enumerate(result.chapters):
        user_images = images_by_note.get(draft.source_note_id or "", [])
        chapter = Chapter(
            id=uuid.uuid4(),
            story_id=story.id,
            position=position,
            title=draft.title,
            content=draft.content,
            illustration_prompt=draft.illustration_prompt,
            source_note_id=uuid.UUID(draft.source_note_id) if draft.source_note_id else None,
            user_image_ids=user_images,
        )
        session.add(chapter)
        # Chapters that carry the user's own photos get no generated image (as the frontend does).
        if not user_images and draft.illustration_prompt:
            create_job(
                session,
                owner_id=job.owner_id,
                kind="illustration",
                parent_id=job.id,
                input={
                    "prompt": draft.illustration_prompt,
                    "style": style,
                    "chapterId": str(chapter.id),
                    "storyId": str(story.id),
                },
                max_attempts=run.context.settings.attempts_for("illustration"),
            )
            children += 1
    session.flush()
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.attempts == job.attempts)
        .values(usage=usage_dict(result.usage))
    )
    if children:
        # The story finishes when its last illustration does (workers.fanout).
        run.progress("images", 0, children)  # commits chapters + children; messages follow
        return
    session.flush()
    complete_story(session, job, {})


@celery_app.task(name="lifetales.build_story", acks_late=True, ignore_result=True)
def build_story_task(job_id: str) -> None:
    run_job(job_id, build_story)
