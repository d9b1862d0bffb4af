"""Celery tasks, one module per job kind. Importing this package registers them all."""

from workers.tasks import (
    batch,
    film,
    illustration,
    maintenance,
    narrator_clip,
    render,
    story,
    transcription,
    webhooks,
)

__all__ = [
    "batch", "film", "illustration", "maintenance", "narrator_clip", "render", "story",
    "transcription", "webhooks",
]
