"""SQLAlchemy models, one module per aggregate."""

from models.base import Base
from models.cache import CacheEntry
from models.film import Film
from models.job import (
    JOB_KINDS,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    WEBHOOK_EVENTS,
    Job,
    JobEvent,
    WebhookDelivery,
)
from models.note import Media, Note
from models.space import Space
from models.story import Chapter, Story
from models.user import User, UserSettings

__all__ = [
    "JOB_KINDS",
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "WEBHOOK_EVENTS",
    "Base",
    "CacheEntry",
    "Chapter",
    "Film",
    "Job",
    "JobEvent",
    "Media",
    "Note",
    "Space",
    "Story",
    "User",
    "UserSettings",
    "WebhookDelivery",
]
