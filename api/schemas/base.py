"""Base schema: snake_case attributes, camelCase JSON; unknown fields are rejected (422)."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def reject_nul(value: Any) -> None:
    """PostgreSQL text cannot hold NUL; refuse it as bad input rather than fail on INSERT."""
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError("must not contain NUL characters")


class CamelSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    def on_bind_field(self, field_name: str, field_obj: fields.Field[Any]) -> None:
        field_obj.data_key = camelcase(field_obj.data_key or field_name)
        if isinstance(field_obj, fields.String) and reject_nul not in field_obj.validators:
            field_obj.validators.append(reject_nul)
