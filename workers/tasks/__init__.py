"""Celery tasks, one module per job kind. Importing this package registers them all."""

from workers.tasks import (
    batch,
    illustration,
    maintenance,
    narration,
    story,
    transcription,
    webhooks,
)

__all__ = ["batch", "illustration", "maintenance", "narration", "story", "transcription",
           "webhooks"]
