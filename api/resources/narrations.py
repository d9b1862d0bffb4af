"""Narrations: a text spoken in a voice style (a job), replacing the frontend's TTS server."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.ratelimit import charge
from api.schemas.narrations import NarrationRequestSchema
from api.state import db, state
from api.submit import SUBMIT_HEADERS, SUBMITTED, job_options, submit
from models import Job
from workers.dispatch import create_job

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
        user = current_user()
        payload = {"text": data["text"], "voiceStyle": data["voice_style"],
                   "language": data["language"], "force": data["force"]}
        options = job_options(data)

        def create(key: str | None, request_hash: str) -> Job:
            charge("narration")  # not on an Idempotency-Key replay: that makes no new job
            return create_job(db(), owner_id=user.id, kind="narration", input=payload,
                              idempotency_key=key, request_hash=request_hash,
                              max_attempts=state().settings.attempts_for("narration"),
                              **options.job_args())

        return submit(user.id, payload, create, options=options)
