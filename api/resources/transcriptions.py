"""POST /transcriptions: the architecture brief's contract, as a job."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from api.auth import SECURITY, current_user_id, token_required
from api.errors import error_responses
from api.media_intake import (
    MAX_MEDIA_BYTES,
    classify,
    read_upload,
    start_transcription,
    store_media,
    too_large,
    uploaded_file,
)
from api.ownership import owned_note_anywhere
from api.ratelimit import charge
from api.schemas.stories import TranscriptionFormSchema, TranscriptionJsonSchema
from api.submit import SUBMIT_HEADERS, SUBMITTED, job_options, load_body, submit

blp = Blueprint("transcriptions", __name__, url_prefix="/api/v1", description="Transcriptions")

# base64 grows data by 4/3; anything longer cannot decode to an allowed size.
MAX_BASE64_CHARS = (MAX_MEDIA_BYTES + 2) // 3 * 4
# Built once: a schema's construction costs more than loading one small body with it.
json_schema = TranscriptionJsonSchema()
form_schema = TranscriptionFormSchema()


def _decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]  # tolerate a data: URL as FileReader produces
    if len(text) > MAX_BASE64_CHARS:
        too_large("audioData")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        abort(422, message="audioData is not valid base64",
              errors={"json": {"audioData": ["not valid base64"]}})
    raise AssertionError("unreachable")


@blp.route("/transcriptions")
class Transcriptions(MethodView):
    decorators = [token_required]  # the user's id is all it needs

    @blp.doc(
        security=SECURITY,
        requestBody={
            "required": True,
            "content": {
                "application/json": {"schema": TranscriptionJsonSchema},
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "noteId": {"type": "string", "format": "uuid"},
                        "force": {"type": "boolean"},
                        "webhook": {"type": "string", "format": "uri"},
                        "webhookEvents": {"type": "string",
                                          "description": "comma-separated: start,progress"},
                        "deadlineSeconds": {"type": "integer", "minimum": 1}}},
                },
            },
        },
        parameters=SUBMIT_HEADERS,
        responses={**SUBMITTED, **error_responses(400, 401, 404, 413, 415, 422, 429)},
    )
    def post(self) -> Response:
        """Transcribe audio: JSON ``{audioData: base64, mimeType}`` or multipart ``file``."""
        if request.mimetype == "multipart/form-data":
            form = load_body(form_schema, request.form.to_dict())
            upload = uploaded_file()
            data = read_upload(upload, "audio")
            declared = upload.mimetype
        else:
            if not request.is_json:
                abort(415, message="send application/json or multipart/form-data")
            form = load_body(json_schema, request.get_json(silent=True))
            data = _decode_base64(form["audio_data"])
            declared = form["mime_type"]
            if len(data) > MAX_MEDIA_BYTES:
                too_large("audio")
        _, mime = classify(data, declared, "audio", audio_only=True)
        note = owned_note_anywhere(form["note_id"]) if form.get("note_id") else None
        user_id = current_user_id()
        force = bool(form.get("force"))
        digest = hashlib.sha256(data).hexdigest()  # once: the fingerprint's and the media's
        fingerprint = {"audio": digest, "mimeType": mime,
                       "noteId": str(note.id) if note else None, "force": force}
        options = job_options(form)

        def create(key: str | None, request_hash: str) -> Any:
            charge("transcription")  # not on an Idempotency-Key replay: that makes no new job
            media = store_media(data, "audio", mime, owner_id=user_id,
                                note_id=note.id if note else None, sha256=digest)
            return start_transcription(media, idempotency_key=key, request_hash=request_hash,
                                       force=force, job_args=options.job_args())

        return submit(user_id, fingerprint, create, options=options)
