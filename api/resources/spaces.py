"""Spaces: a trip, a year, a project."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.ownership import owned_space
from api.schemas.spaces import SpaceCreateSchema, SpaceDetailSchema, SpaceSchema, SpaceUpdateSchema
from api.state import db, state
from models import Note, Space
from workers.retention import delete_released_files, stored_keys_of_space

blp = Blueprint("spaces", __name__, url_prefix="/api/v1", description="Spaces")


@blp.route("/spaces")
class Spaces(MethodView):
    decorators = [login_required]

    @blp.response(200, SpaceSchema(many=True))
    @blp.doc(security=SECURITY, responses=error_responses(401, 429))
    def get(self) -> list[Space]:
        """The user's spaces, newest first."""
        return list(db().scalars(
            select(Space).where(Space.owner_id == current_user().id)
            .order_by(Space.created_at.desc())
        ))

    @blp.arguments(SpaceCreateSchema)
    @blp.response(201, SpaceDetailSchema)
    @blp.doc(security=SECURITY, responses=error_responses(400, 401, 413, 429))
    def post(self, data: dict[str, Any]) -> Space:
        """Create a space."""
        space = Space(owner_id=current_user().id, **data)
        db().add(space)
        db().commit()
        return space


@blp.route("/spaces/<uuid:space_id>")
class SpaceById(MethodView):
    decorators = [login_required]

    @blp.response(200, SpaceDetailSchema)
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def get(self, space_id: uuid.UUID) -> Space:
        """A space with its moments in time order."""
        space = owned_space(space_id)
        db().scalars(select(Note).where(Note.space_id == space_id)
                     .options(selectinload(Note.media))).all()
        return space

    @blp.arguments(SpaceUpdateSchema)
    @blp.response(200, SpaceDetailSchema)
    @blp.doc(security=SECURITY, responses=error_responses(400, 401, 404, 413, 429))
    def patch(self, data: dict[str, Any], space_id: uuid.UUID) -> Space:
        """Change some of a space's fields."""
        space = owned_space(space_id)
        for name, value in data.items():
            setattr(space, name, value)
        db().commit()
        return space

    @blp.response(204)
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def delete(self, space_id: uuid.UUID) -> None:
        """Delete a space with its moments, media and stories, and their stored files."""
        space = owned_space(space_id)
        keys = stored_keys_of_space(db(), space.id)
        db().delete(space)
        db().commit()
        # After the commit: a file whose delete fails is an orphan the retention sweep retries.
        delete_released_files(db(), state().storage, keys)
