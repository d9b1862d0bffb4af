"""Celery tasks, one module per job kind. Importing this package registers them all."""

from workers.tasks import illustration, maintenance, story, transcription

__all__ = ["illustration", "maintenance", "story", "transcription"]
