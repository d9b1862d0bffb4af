"""Look up rows the current user owns; anything else is 404 (never 403: no existence leak)."""

from __future__ import annotations

import uuid

from flask_smorest import abort
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.auth import current_user
from api.state import db
from models import Job, Media, Note, Space


def owned_space(space_id: uuid.UUID) -> Space:
    space = db().get(Space, space_id)
    if space is None or space.owner_id != current_user().id:
        abort(404, message="space not found")
    assert space is not None
    return space


def owned_note(space_id: uuid.UUID, note_id: uuid.UUID) -> Note:
    owned_space(space_id)
    note = db().scalar(
        select(Note).where(Note.id == note_id, Note.space_id == space_id)
        .options(selectinload(Note.media))
    )
    if note is None:
        abort(404, message="note not found")
    assert note is not None
    return note


def owned_note_anywhere(note_id: uuid.UUID) -> Note:
    note = db().scalar(
        select(Note).join(Space).where(Note.id == note_id, Space.owner_id == current_user().id)
    )
    if note is None:
        abort(404, message="note not found")
    assert note is not None
    return note


def owned_media(media_id: uuid.UUID) -> Media:
    media = db().get(Media, media_id)
    if media is None or media.owner_id != current_user().id:
        abort(404, message="media not found")
    assert media is not None
    return media


def owned_job(job_id: uuid.UUID) -> Job:
    job = db().get(Job, job_id)
    if job is None or job.owner_id != current_user().id:
        abort(404, message="job not found")
    assert job is not None
    return job
