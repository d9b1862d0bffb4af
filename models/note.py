"""Moments (notes) and their attached media files."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, TimestampMixin, utcnow

if TYPE_CHECKING:
    from models.space import Space


class Note(TimestampMixin, Base):
    """The frontend's Note (type MOMENT)."""

    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_space_timestamp", "space_id", "timestamp_ms"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    space_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("spaces.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16), default="MOMENT")
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str | None] = mapped_column(String(200))
    text_content: Mapped[str | None] = mapped_column(Text)

    space: Mapped[Space] = relationship(back_populates="notes")
    media: Mapped[list[Media]] = relationship(
        back_populates="note",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(Media.position, Media.created_at)",
    )


class Media(Base):
    """A stored file: a note's audio or photo, or audio sent for a standalone transcription."""

    __tablename__ = "media"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    note_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("notes.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # audio | image | video
    position: Mapped[int] = mapped_column(Integer, default=0)
    storage_key: Mapped[str] = mapped_column(String(300))
    url: Mapped[str] = mapped_column(String(1000))
    mime_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    transcription: Mapped[str | None] = mapped_column(Text)
    transcription_job_id: Mapped[uuid.UUID | None]
    # Retention deleted the stored file (raw audio is kept for less time than text).
    removed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    note: Mapped[Note | None] = relationship(back_populates="media")
