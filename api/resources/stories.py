"""Generating a space's story (a job) and reading its versions; standalone illustrations."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import func, select

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.ownership import owned_space
from api.ratelimit import charge
from api.schemas.base import camelcase
from api.schemas.stories import (
    IllustrationRequestSchema,
    StoryQuerySchema,
    StoryRequestSchema,
    StorySchema,
    StoryVersionSchema,
)
from api.state import db, state
from api.submit import SUBMIT_HEADERS, SUBMITTED, submit, submit_job
from models import TERMINAL_STATUSES, Job, Note, Space, Story
from workers.batch import MAX_NOTES_PER_STORY, story_job_input
from workers.dispatch import create_job
from workers.fanout import ILLUSTRATIONS_ONLY, missing_illustrations

blp = Blueprint("stories", __name__, url_prefix="/api/v1", description="Stories and illustrations")


@blp.route("/spaces/<uuid:space_id>/story")
class SpaceStory(MethodView):
    decorators = [login_required]

    @blp.arguments(StoryRequestSchema)
    @blp.doc(security=SECURITY, parameters=SUBMIT_HEADERS, responses={
        **SUBMITTED, **error_responses(400, 401, 404, 413, 429)})
    def post(self, data: dict[str, Any], space_id: uuid.UUID) -> Response:
        """Generate (or regenerate) the space's illustrated story."""
        space = owned_space(space_id)
        user = current_user()
        note_count = db().scalar(select(func.count()).where(Note.space_id == space.id)) or 0
        if note_count == 0:
            abort(422, message="the space has no moments yet; add some before generating a story")
        if note_count > MAX_NOTES_PER_STORY:
            abort(422, message=f"a story takes at most {MAX_NOTES_PER_STORY} moments")
        overrides = {camelcase(k): v for k, v in (data.get("settings") or {}).items()}
        payload = story_job_input(db(), owner_id=user.id, space_id=space.id,
                                  overrides=overrides, force=data["force"])
        return submit_job(user.id, "story", payload, data)

    @blp.arguments(StoryQuerySchema, location="query")
    @blp.response(200, StorySchema)
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def get(self, query: dict[str, Any], space_id: uuid.UUID) -> Story:
        """The current story (or ``?version=N``) with its chapters."""
        space = owned_space(space_id)
        version = query.get("version", space.current_story_version)
        story = None
        if version is not None:
            story = db().scalar(
                select(Story).where(Story.space_id == space.id, Story.version == version)
            )
        if story is None:
            abort(404, message="no story has been generated for this space yet"
                  if version is None else f"story version {version} not found")
        assert story is not None
        story.missing_illustrations = [  # type: ignore[attr-defined]
            {"chapter_id": chapter.id, "chapter_index": chapter.position, "variant": variant}
            for chapter, variant, _ in missing_illustrations(story)
        ]
        return story


@blp.route("/spaces/<uuid:space_id>/story/illustrations/retry")
class SpaceStoryIllustrationsRetry(MethodView):
    decorators = [login_required]

    @blp.doc(security=SECURITY, parameters=SUBMIT_HEADERS, responses={
        **SUBMITTED, **error_responses(401, 404, 409, 422, 429)})
    def post(self, space_id: uuid.UUID) -> Response:
        """Draw again only the current story's missing illustrations (those that failed); its
        text and the chapters that have their images are left as they are. 409 when nothing is
        missing or a generation of the space is still running."""
        space = owned_space(space_id)
        user = current_user()
        payload = {"spaceId": str(space.id), "mode": ILLUSTRATIONS_ONLY}

        def create(key: str | None, request_hash: str) -> Job:
            # Locked until the job commits: two retries at once cannot both draw the images.
            db().execute(select(Space.id).where(Space.id == space.id).with_for_update())
            if generation_in_flight(space):
                abort(409, message="a story generation of this space is still running; "
                                   "retry its illustrations once it has finished")
            story = current_story(space)
            if story is None:
                abort(409, message="no story has been generated for this space yet")
            assert story is not None
            missing = missing_illustrations(story)
            if not missing:
                abort(409, message="every chapter of the current story has its illustrations")
            charge("illustration")
            return create_job(db(), owner_id=user.id, kind="story",
                              input={**payload, "storyId": str(story.id),
                                     "version": story.version, "missing": len(missing)},
                              idempotency_key=key, request_hash=request_hash,
                              max_attempts=state().settings.attempts_for("story"))

        return submit(user.id, payload, create)


def current_story(space: Space) -> Story | None:
    if space.current_story_version is None:
        return None
    return db().scalar(select(Story).where(
        Story.space_id == space.id, Story.version == space.current_story_version))


def generation_in_flight(space: Space) -> bool:
    """Whether a story job of the space (a generation or an illustration retry) is unfinished."""
    unfinished = db().scalars(select(Job.input).where(
        Job.owner_id == space.owner_id, Job.kind == "story",
        Job.status.not_in(TERMINAL_STATUSES)))
    return any((spec or {}).get("spaceId") == str(space.id) for spec in unfinished)


@blp.route("/spaces/<uuid:space_id>/stories")
class SpaceStoryVersions(MethodView):
    decorators = [login_required]

    @blp.response(200, StoryVersionSchema(many=True))
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def get(self, space_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every story version of the space, newest first; ``current`` marks the one shown."""
        space = owned_space(space_id)
        stories = db().scalars(
            select(Story).where(Story.space_id == space.id).order_by(Story.version.desc())
        )
        return [
            {"version": s.version, "status": s.status, "job_id": s.job_id,
             "current": s.version == space.current_story_version,
             "created_at": s.created_at, "generated_at": s.generated_at}
            for s in stories
        ]


@blp.route("/illustrations")
class Illustrations(MethodView):
    decorators = [login_required]

    @blp.arguments(IllustrationRequestSchema)
    @blp.doc(security=SECURITY, parameters=SUBMIT_HEADERS, responses={
        **SUBMITTED, **error_responses(400, 401, 413, 429)})
    def post(self, data: dict[str, Any]) -> Response:
        """Draw one illustration; the job's result is ``{imageUrl, width, height, mimeType}``."""
        user = current_user()
        payload = {"prompt": data["prompt"], "style": data["style"], "force": data["force"]}
        return submit_job(user.id, "illustration", payload, data)
