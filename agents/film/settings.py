"""The renderer's settings, read from an environment mapping by the caller (never at import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from agents.film.types import RenderLimits


def _number(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return value


@dataclass(frozen=True)
class FilmSettings:
    """Which ffmpeg renders, where the music is, and the render's bounds."""

    ffmpeg_binary: str | None = None  # a path, "bundled", or None: system, else the wheel's
    music_library_dir: Path | None = None  # <dir>/<mood>/*.mp3...; None: films have no music
    limits: RenderLimits = field(default_factory=RenderLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FilmSettings:
        """Build settings from an environment mapping; empty values count as unset."""
        limits = RenderLimits()
        wall = _number(env, "FILM_RENDER_WALL_SECONDS")
        memory = _number(env, "FILM_RENDER_MEMORY_MB")
        if wall is not None:
            limits = replace(limits, wall_seconds=wall)
        if memory is not None:
            limits = replace(limits, memory_bytes=int(memory * 1024 * 1024))
        library = env.get("MUSIC_LIBRARY_DIR", "").strip()
        return cls(
            ffmpeg_binary=env.get("FFMPEG_BINARY", "").strip() or None,
            music_library_dir=Path(library) if library else None,
            limits=limits,
        )
