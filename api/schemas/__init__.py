"""Marshmallow schemas: the API's JSON, in camelCase like the frontend's TypeScript types."""
