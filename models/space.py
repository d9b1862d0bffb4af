"""The space aggregate: a trip, a year, a project that holds moments and a story."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, TimestampMixin

if TYPE_CHECKING:
    from models.note import Note
    from models.story import Story


class Space(TimestampMixin, Base):
    __tablename__ = "spaces"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    cover_image: Mapped[str | None] = mapped_column(String(1000))
    start_date: Mapped[datetime | None]
    # The story version readers see; swapped only when a new version is complete.
    current_story_version: Mapped[int | None] = mapped_column(Integer)

    notes: Mapped[list[Note]] = relationship(
        back_populates="space",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Note.timestamp_ms",
    )
    stories: Mapped[list[Story]] = relationship(
        back_populates="space",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
