from __future__ import annotations

from marshmallow import fields, validate

from agents.types import MAX_NARRATION_CHARS, VOICE_STYLES
from api.schemas.jobs import JobOptionsSchema
from api.schemas.stories import FORCE_HELP

# A BCP 47 tag (en, pt-BR, zh-Hant-TW), as agents.speech.LANGUAGE_TAG checks it again.
_LANGUAGE = r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}$"


class NarrationRequestSchema(JobOptionsSchema):
    """What to say and how; the frontend's text-to-speech request."""

    text = fields.String(required=True, validate=[
        validate.Length(min=1, max=MAX_NARRATION_CHARS),
        validate.Regexp(r"(?s).*\S", error="must contain something to say"),
    ], metadata={"description": "The words to speak."})
    voice_style = fields.String(load_default="storyteller", validate=validate.OneOf(VOICE_STYLES),
                                metadata={"description": "The StorySettings voiceStyle."})
    language = fields.String(load_default=None, allow_none=True,
                             validate=validate.Regexp(_LANGUAGE, error="must be a BCP 47 tag"),
                             metadata={"description": "BCP 47 tag of the text's language "
                                                      "(e.g. fr, pt-BR); unset: detected."})
    force = fields.Boolean(load_default=False, metadata=FORCE_HELP)
