"""Look up rows the current user owns; anything else is 404 (never 403: no existence leak)."""

from __future__ import annotations

import uuid
from typing import TypeVar

from flask_smorest import abort
from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from api.auth import current_user_id
from api.state import db
from models import Job, Note, Space

T = TypeVar("T")


def _one_or_404(statement: Select[T], what: str) -> T:
    row = db().scalar(statement)
    if row is None:
        abort(404, message=f"{what} not found")
    assert row is not None
    return row


def owned_space(space_id: uuid.UUID) -> Space:
    return _one_or_404(
        select(Space).where(Space.id == space_id, Space.owner_id == current_user_id()), "space"
    )


def owned_note(space_id: uuid.UUID, note_id: uuid.UUID) -> Note:
    owned_space(space_id)
    return _one_or_404(
        select(Note).where(Note.id == note_id, Note.space_id == space_id)
        .options(selectinload(Note.media)),
        "note",
    )


def owned_note_anywhere(note_id: uuid.UUID) -> Note:
    return _one_or_404(
        select(Note).join(Space).where(Note.id == note_id, Space.owner_id == current_user_id()),
        "note",
    )


def owned_job(job_id: uuid.UUID) -> Job:
    return _one_or_404(
        select(Job).where(Job.id == job_id, Job.owner_id == current_user_id()), "job"
    )
