"""Celery tasks, one module per job kind. Importing this package registers them all."""

from workers.tasks import (
    batch,
    film,
    illustration,
    maintenance,
    narration,
    narrator_clip,
    render,
    story,
    transcription,
    webhooks,
)

__all__ = [
    "batch",
    "film",
    "illustration",
    "maintenance",
    "narration",
    "narrator_clip",
    "render",
    "story",
    "transcription",
    "webhooks",
]
