"""Base schema: snake_case attributes, camelCase JSON; unknown fields are rejected (422)."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class CamelSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    def on_bind_field(self, field_name: str, field_obj: fields.Field[Any]) -> None:
        field_obj.data_key = camelcase(field_obj.data_key or field_name)
