"""Films of a space: make one (a job) of the current story version, read the current one and
every version."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import select

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.ownership import owned_job, owned_space
from api.ratelimit import charge
from api.resources.stories import current_story
from api.schemas.base import camelcase
from api.schemas.films import FilmQuerySchema, FilmRequestSchema, FilmSchema
from api.state import db, state
from api.submit import SUBMIT_HEADERS, SUBMITTED, job_options, submit
from models import Film, Job, Media, Space, Story
from workers.batch import story_settings_for
from workers.dispatch import create_job

blp = Blueprint("films", __name__, url_prefix="/api/v1", description="Films")

FILM_SETTINGS = ("voiceStyle", "backgroundMusic", "narrativeTone")


def current_film(space: Space) -> Film | None:
    """The newest ready film of the space."""
    return db().scalar(select(Film).where(Film.space_id == space.id, Film.status == "ready")
                       .order_by(Film.version.desc()).limit(1))


def film_view(film: Film, current: Film | None) -> dict[str, Any]:
    story_version = db().scalar(select(Story.version).where(Story.id == film.story_id))
    return {**{c.key: getattr(film, c.key) for c in Film.__table__.columns},
            "story_version": story_version,
            "current": current is not None and film.id == current.id}


def intro_clip(clip_id: uuid.UUID | None) -> dict[str, Any]:
    """The film job's input for its opening narrator clip (the clip's stored video, and its
    content hash for the film's cache key); 404 for another user's or an unknown clip, 422 for
    one that is not finished or whose video is gone."""
    if clip_id is None:
        return {}
    job = owned_job(clip_id)
    if job.kind != "narrator_clip":
        abort(404, message="narrator clip not found")
    media_id = (job.result or {}).get("mediaId") if job.status == "succeeded" else None
    media = db().get(Media, uuid.UUID(media_id)) if media_id else None
    if media is None or media.removed_at is not None:
        abort(422, message="narratorClipId: the clip is not finished, or its video was deleted",
              errors={"json": {"narratorClipId": ["not a finished clip"]}})
    assert media is not None
    return {"narratorClipId": str(job.id), "introClipKey": media.storage_key,
            "introClipSha256": media.sha256}


@blp.route("/spaces/<uuid:space_id>/film")
class SpaceFilm(MethodView):
    decorators = [login_required]

    @blp.arguments(FilmRequestSchema)
    @blp.doc(security=SECURITY, parameters=SUBMIT_HEADERS, responses={
        **SUBMITTED, **error_responses(400, 401, 404, 413, 422, 429)})
    def post(self, data: dict[str, Any], space_id: uuid.UUID) -> Response:
        """Make a narrated film of the space's current story version (a ``film`` job: script,
        narration, render, upload). 422 when the space has no story yet."""
        space = owned_space(space_id)
        user = current_user()
        story = current_story(space)
        if story is None:
            abort(422, message="the space has no story yet; generate one before its film")
        assert story is not None
        saved = story_settings_for(db(), user.id, {})
        overrides = {camelcase(k): v for k, v in (data.get("settings") or {}).items()}
        settings = {key: overrides.get(key, saved[key]) for key in FILM_SETTINGS}
        payload = {"spaceId": str(space.id), "storyId": str(story.id),
                   "storyVersion": story.version, "settings": settings, "force": data["force"],
                   **intro_clip(data.get("narrator_clip_id"))}
        options = job_options(data)

        def create(key: str | None, request_hash: str) -> Job:
            charge("film")  # not on an Idempotency-Key replay: that makes no new job
            return create_job(db(), owner_id=user.id, kind="film", input=payload,
                              idempotency_key=key, request_hash=request_hash,
                              max_attempts=state().settings.attempts_for("film"),
                              **options.job_args())

        return submit(user.id, payload, create, options=options)

    @blp.arguments(FilmQuerySchema, location="query")
    @blp.response(200, FilmSchema)
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def get(self, query: dict[str, Any], space_id: uuid.UUID) -> dict[str, Any]:
        """The current film (the newest ready one), or ``?version=N``."""
        space = owned_space(space_id)
        current = current_film(space)
        film = current
        if "version" in query:
            film = db().scalar(select(Film).where(Film.space_id == space.id,
                                                  Film.version == query["version"]))
        if film is None:
            abort(404, message="no film has been made for this space yet"
                  if "version" not in query else f"film version {query['version']} not found")
        assert film is not None
        return film_view(film, current)


@blp.route("/spaces/<uuid:space_id>/films")
class SpaceFilms(MethodView):
    decorators = [login_required]

    @blp.response(200, FilmSchema(many=True))
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def get(self, space_id: uuid.UUID) -> list[dict[str, Any]]:
        """Every film of the space, newest first; ``current`` marks the one shown."""
        space = owned_space(space_id)
        current = current_film(space)
        films = db().scalars(select(Film).where(Film.space_id == space.id)
                             .order_by(Film.version.desc()))
        return [film_view(film, current) for film in films]
