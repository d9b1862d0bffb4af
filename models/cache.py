"""Content-addressed results of agent calls, shared by every worker."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class CacheEntry(Base):
    """One agent result by the sha256 of (agent, model, prompt version, normalized input).

    ``pending`` while the job that owns the lease computes it: identical work arriving then
    waits for that job instead of calling the model again.
    """

    __tablename__ = "cache_entries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))  # pending | ready
    value: Mapped[dict[str, Any] | None]
    owner_job_id: Mapped[uuid.UUID | None]
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
