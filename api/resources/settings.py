"""The user's saved story settings (the frontend's StorySettings)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from agents.types import StorySettings
from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.schemas.settings import FullStorySettingsSchema, StorySettingsSchema
from api.state import db
from models import UserSettings

blp = Blueprint("settings", __name__, url_prefix="/api/v1", description="Story settings")

FIELDS = tuple(StorySettings.__dataclass_fields__)


@blp.route("/settings")
class Settings(MethodView):
    decorators = [login_required]

    @blp.response(200, StorySettingsSchema)
    @blp.doc(security=SECURITY, responses=error_responses(401, 429))
    def get(self) -> dict[str, Any]:
        """Saved settings, or the defaults."""
        saved = db().get(UserSettings, current_user().id)
        return {name: getattr(saved or StorySettings(), name) for name in FIELDS}

    @blp.arguments(FullStorySettingsSchema)
    @blp.response(200, StorySettingsSchema)
    @blp.doc(security=SECURITY, responses=error_responses(400, 401, 413, 429))
    def put(self, data: dict[str, Any]) -> dict[str, Any]:
        """Replace the saved settings."""
        session = db()
        user = current_user()
        saved = session.get(UserSettings, user.id) or UserSettings(user_id=user.id)
        for name, value in data.items():
            setattr(saved, name, value)
        session.add(saved)
        session.commit()
        return {name: getattr(saved, name) for name in FIELDS}
