"""The user aggregate: account and saved story settings."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # Bumped on password change: tokens carry it, so older tokens stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    role: Mapped[str] = mapped_column(String(16), default="user")
    # HMAC-SHA256 key that signs this user's webhooks; shown to them, rotatable.
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    settings: Mapped[UserSettings | None] = relationship(
        back_populates="user", cascade="all, delete-orphan", uselist=False
    )


class UserSettings(Base):
    """The frontend's StorySettings, saved per user."""

    __tablename__ = "user_settings"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    narrative_tone: Mapped[str] = mapped_column(String(32), default="cinematic")
    story_mode: Mapped[str] = mapped_column(String(32), default="chapter")
    creativity: Mapped[float] = mapped_column(Float, default=1.0)
    image_style: Mapped[str] = mapped_column(String(32), default="illustration")
    images_per_chapter: Mapped[int] = mapped_column(Integer, default=1)
    voice_style: Mapped[str] = mapped_column(String(32), default="storyteller")
    background_music: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="settings")
