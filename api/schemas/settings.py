from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from agents.types import IMAGE_STYLES, NARRATIVE_TONES, STORY_MODES, VOICE_STYLES
from api.schemas.base import CamelSchema


class StorySettingsSchema(CamelSchema):
    """The frontend's StorySettings; every field optional on input, defaults on output."""

    narrative_tone = fields.String(validate=validate.OneOf(NARRATIVE_TONES))
    story_mode = fields.String(validate=validate.OneOf(STORY_MODES))
    creativity = fields.Float(validate=validate.Range(min=0, max=2))
    image_style = fields.String(validate=validate.OneOf(IMAGE_STYLES))
    images_per_chapter = fields.Integer(strict=True, validate=validate.Range(min=0, max=4))
    voice_style = fields.String(validate=validate.OneOf(VOICE_STYLES))
    background_music = fields.Boolean()


class FullStorySettingsSchema(StorySettingsSchema):
    """PUT /settings replaces the whole object: every field is required."""

    class Meta:
        ordered = True

    def on_bind_field(self, field_name: str, field_obj: fields.Field[Any]) -> None:
        super().on_bind_field(field_name, field_obj)
        field_obj.required = True
