from __future__ import annotations

from marshmallow import fields, validate

from api.schemas.base import CamelSchema

# Bounded above: hashing a megabyte "password" is work an attacker could make us do.
PASSWORD_LENGTH = validate.Length(min=8, max=256)


class CredentialsSchema(CamelSchema):
    email = fields.Email(required=True, validate=validate.Length(max=255))
    password = fields.String(required=True, load_only=True, validate=PASSWORD_LENGTH)


class LoginSchema(CamelSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=255))
    password = fields.String(required=True, load_only=True,
                             validate=validate.Length(min=1, max=256))


class PasswordChangeSchema(CamelSchema):
    current_password = fields.String(required=True, load_only=True,
                                     validate=validate.Length(min=1, max=256))
    new_password = fields.String(required=True, load_only=True, validate=PASSWORD_LENGTH)


class TokenSchema(CamelSchema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class UserSchema(CamelSchema):
    id = fields.UUID(dump_only=True)
    email = fields.String(dump_only=True)
    role = fields.String(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


class RegisteredSchema(TokenSchema):
    user = fields.Nested(UserSchema)
