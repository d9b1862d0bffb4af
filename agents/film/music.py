"""Background music from a local library laid out by mood.

``MUSIC_LIBRARY_DIR`` holds one folder per script mood (``upbeat``, ``calm``, ``emotional``,
``dramatic``, ``neutral``) with audio files in it (mp3, m4a, ogg, opus, wav, flac). A mood with no
tracks falls back to ``neutral``; no library (or no track at all) means no music.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MUSIC_MOODS: tuple[str, ...] = ("upbeat", "calm", "emotional", "dramatic", "neutral")
FALLBACK_MOOD = "neutral"
TRACK_SUFFIXES: frozenset[str] = frozenset({".mp3", ".m4a", ".aac", ".ogg", ".opus", ".wav",
                                            ".flac"})


def _tracks(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in TRACK_SUFFIXES
        and not path.name.startswith(".")
    )


def pick_music(library_dir: Path | None, mood: str, *, seed: str = "") -> Path | None:
    """A track for ``mood``, the same one for the same ``seed`` (say, the story version)."""
    if library_dir is None:
        return None
    moods = [mood, FALLBACK_MOOD] if mood in MUSIC_MOODS else [FALLBACK_MOOD]
    for name in moods:
        tracks = _tracks(library_dir / name)
        if tracks:
            digest = hashlib.sha256(seed.encode()).digest()
            return tracks[int.from_bytes(digest[:4], "big") % len(tracks)]
    return None
