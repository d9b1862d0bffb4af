"""Make a film of a story version: write its script here, then wait (off any worker thread)
while one narration child per scene speaks and a render child composes the video; the film
completes in ``workers.film`` when the last child finishes. An identical film (same story
version, settings, voice, music and models) is answered from the cache without rendering."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from agents.film_script import script_dict
from agents.models import availability
from agents.types import ChapterInput
from models import Film, Job, Space, Story
from models.base import utcnow
from workers import lifecycle
from workers.app import celery_app
from workers.attempt import JobFailed, JobRun, MustWait, usage_dict
from workers.cache import cache_key, lookup_or_lease
from workers.events import emit
from workers.film import CACHE_AGENT, apply_render, create_narrations, film_result
from workers.parents import on_child_finished
from workers.runner import run_job

# Part of every film's cache key: bump when the way films are made changes (script to render).
FILM_PIPELINE_VERSION = "film-v1"
# An identical film being made right now: look again this often (films take minutes).
JOIN_POLL_S = 10.0
# The script's input and output: ~4 characters a token, one narration per chapter.
SCRIPT_TOKENS_PER_CHAPTER = 400


def chapter_inputs(story: Story) -> list[ChapterInput]:
    return [ChapterInput(id=str(c.id), title=c.title, content=c.content,
                         illustration_prompt=c.illustration_prompt) for c in story.chapters]


def narrator_model(run: JobRun) -> str:
    """The speech model a narration would use now (``offline`` for the offline provider)."""
    agents = run.context.settings.agents
    if not agents.has_api_key:
        return "offline"
    return availability.active(agents.tts, agents.model_recheck_s)


def music_fingerprint(library: Path | None) -> str | None:
    """What the music library holds (names and sizes): a changed library makes a new film."""
    if library is None or not library.is_dir():
        return None
    listing = sorted(f"{p.relative_to(library)}:{p.stat().st_size}"
                     for p in library.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()


def film_cache_payload(run: JobRun, story: Story, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides what the film looks and sounds like."""
    film_settings = run.context.settings.film
    return {
        "storyId": str(story.id), "storyVersion": story.version,
        "chapters": [(c.title, c.content, c.user_image_ids, c.generated_image_urls
                      or [c.generated_image_url]) for c in story.chapters],
        "settings": settings,
        "narrator": narrator_model(run),
        "introClip": run.job.input.get("introClipSha256"),
        "music": music_fingerprint(film_settings.render.music_library_dir)
        if settings.get("backgroundMusic") else None,
    }


def new_film(run: JobRun, space: Space, story: Story, settings: dict[str, Any]) -> Film:
    """This job's film row, with the space's next film version (an earlier attempt's row and
    children are dropped: the film is made again from its script)."""
    session, job = run.session, run.job
    session.execute(delete(Job).where(Job.parent_id == job.id))
    session.execute(delete(Film).where(Film.job_id == job.id))
    # Locked until the row commits: concurrent films of one space take successive versions.
    session.execute(select(Space.id).where(Space.id == space.id).with_for_update())
    latest = session.scalar(select(func.max(Film.version)).where(Film.space_id == space.id))
    film = Film(id=uuid.uuid4(), space_id=space.id, story_id=story.id,
                version=(latest or 0) + 1, job_id=job.id, status="scripting",
                settings=settings)
    session.add(film)
    return film


def make_film(run: JobRun) -> None:
    session, job = run.session, run.job
    space = session.get(Space, uuid.UUID(job.input["spaceId"]))
    if space is None or space.owner_id != job.owner_id:
        raise JobFailed("not_found", "the space no longer exists")
    story = session.get(Story, uuid.UUID(job.input["storyId"]))
    if story is None or story.space_id != space.id or story.status != "ready":
        raise JobFailed("not_found", "the story version no longer exists")
    settings: dict[str, Any] = job.input.get("settings", {})
    writer = run.context.provider.script_writer
    key = cache_key(CACHE_AGENT, writer.model, f"{FILM_PIPELINE_VERSION}/{writer.prompt_version}",
                    film_cache_payload(run, story, settings))
    film = new_film(run, space, story, settings)
    found = lookup_or_lease(session, key, agent=CACHE_AGENT, model=writer.model, job_id=job.id,
                            force=bool(job.input.get("force")))  # commits the film row
    if found.value is not None:
        apply_render(film, found.value, utcnow())
        run.succeed(film_result(film) | {"cached": True})
        return
    if not found.owner:
        raise MustWait(JOIN_POLL_S, step="waiting_for_identical_job")

    run.progress("script", 0, 1)
    script, usage = write_script(run, key, story, space.title, settings)
    run.check_cancel()
    limit = run.context.settings.film.render.limits.max_film_seconds
    if script["totalDurationSeconds"] > limit:
        # Before any narration is paid for; the render checks the narrations' real length too.
        raise JobFailed("film_too_long", f"the script runs {script['totalDurationSeconds']}"
                        f" s; a film lasts at most {limit / 60:g} minutes")
    film.script = script
    emit(session, job.id, "script", film.script)
    config = run.context.settings
    # Kept on the waiting job for its completion (workers.film), replaced by the film's result.
    waiting = {"cached": False, "cacheKey": key, "model": writer.model,
               "cacheTtlSeconds": config.cache_ttl_s,
               "renderAttempts": config.attempts_for("render")}
    session.execute(update(Job).where(Job.id == job.id, Job.attempts == job.attempts)
                    .values(result=waiting, usage=usage))
    lifecycle.mirror(job, result=waiting, usage=usage)
    total = create_narrations(session, job, film, film.script["scenes"],
                              attempts=config.attempts_for("narration"))
    run.progress("narration", 0, total)  # commits the children with the step that awaits them
    on_child_finished(session, job.id)


def write_script(run: JobRun, key: str, story: Story, title: str,
                 settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The film's script and the call's usage: the model's answer, or the one an earlier run of
    this attempt paid for and could not commit (kept until the job commits, workers/answers.py)."""
    kept = run.kept_answer(key)
    if kept is not None:
        return kept["script"], kept["usage"]
    writer = run.context.provider.script_writer
    chapters = chapter_inputs(story)
    estimate = SCRIPT_TOKENS_PER_CHAPTER * len(chapters) + 1500
    written = run.call_upstream(
        writer.model, estimate,
        lambda: writer.write(chapters, title, str(settings.get("narrativeTone", ""))))
    answer = {"script": script_dict(written.script), "usage": usage_dict(written.usage)}
    run.keep_answer(key, answer)
    return answer["script"], answer["usage"]


@celery_app.task(name="lifetales.make_film", acks_late=True, ignore_result=True)
def make_film_task(job_id: str) -> None:
    run_job(job_id, make_film)
