"""Narrations: a text spoken in a voice style (a job), replacing the frontend's TTS server."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.schemas.narrations import NarrationRequestSchema
from api.submit import SUBMIT_HEADERS, SUBMITTED, submit_job

blp = Blueprint("narrations", __name__, url_prefix="/api/v1",
                description="Narrations (text to speech)")


@blp.route("/narrations")
class Narrations(MethodView):
    decorators = [login_required]

    @blp.arguments(NarrationRequestSchema)
    @blp.doc(security=SECURITY, parameters=SUBMIT_HEADERS, responses={
        **SUBMITTED, **error_responses(400, 401, 413, 429)})
    def post(self, data: dict[str, Any]) -> Response:
        """Speak a text; the job's result is ``{audioUrl, mimeType, durationSeconds, cached}``
        (a WAV file)."""
        payload = {"text": data["text"], "voiceStyle": data["voice_style"],
                   "language": data["language"], "force": data["force"]}
        return submit_job(current_user().id, "narration", payload, data)
