"""Story versions of a space and their chapters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, utcnow

if TYPE_CHECKING:
    from models.space import Space


class Story(Base):
    """One generated version of a space's story; written by exactly one story job."""

    __tablename__ = "stories"
    __table_args__ = (UniqueConstraint("space_id", "version", name="uq_stories_space_version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    space_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(String(16), default="writing")  # writing|ready|failed
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    generated_at: Mapped[datetime | None]

    space: Mapped[Space] = relationship(back_populates="stories")
    chapters: Mapped[list[Chapter]] = relationship(
        back_populates="story",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Chapter.position",
    )


class Chapter(Base):
    __tablename__ = "chapters"
    __table_args__ = (UniqueConstraint("story_id", "position", name="uq_chapters_story_position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    story_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stories.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(500))
    content: Mapped[str] = mapped_column(Text)
    illustration_prompt: Mapped[str | None] = mapped_column(Text)
    source_note_id: Mapped[uuid.UUID | None]
    user_image_ids: Mapped[list[Any]]
    generated_image_url: Mapped[str | None] = mapped_column(String(1000))
    # All images drawn for the chapter when imagesPerChapter > 1; the first is generatedImageUrl.
    generated_image_urls: Mapped[list[Any] | None]

    story: Mapped[Story] = relationship(back_populates="chapters")
