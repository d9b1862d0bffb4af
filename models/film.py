"""Films of a space: a narrated video of one story version, made by one film job."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow

# scripting -> narrating -> rendering -> ready | failed | canceled
FILM_STATUSES = ("scripting", "narrating", "rendering", "ready", "failed", "canceled")
# A film job with its film in one of these has no worker of its own: its children work.
FILM_WAITING = ("narrating", "rendering")


class Film(Base):
    """One film version of a space, of the story version it was made from."""

    __tablename__ = "films"
    __table_args__ = (UniqueConstraint("space_id", "version", name="uq_films_space_version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    space_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("spaces.id", ondelete="CASCADE"), index=True)
    story_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(String(16), default="scripting")
    settings: Mapped[dict[str, Any]]
    script: Mapped[dict[str, Any] | None]
    video_url: Mapped[str | None] = mapped_column(String(1000))
    poster_url: Mapped[str | None] = mapped_column(String(1000))
    subtitles_url: Mapped[str | None] = mapped_column(String(1000))
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # [{chapterId, startSeconds, endSeconds, audioUrl}] once rendered.
    scenes: Mapped[list[Any] | None]
    has_music: Mapped[bool | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
