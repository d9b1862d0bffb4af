"""The media storage interface, its error type, and the factory that picks an implementation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from agents.errors import AgentError
from agents.types import StoredMedia

# First segment plain, later ones may hold dots but never start with one: no `..`, no dotfiles
# (the local store's temp files are dotfiles), nothing that can climb out of the media root.
_KEY_RE = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
MAX_KEY_LENGTH = 200  # Cloudinary caps public ids at 255; leave room for folders and extensions


class MediaError(AgentError):
    """A media storage failure; `retryable` says whether trying again later may succeed.

    An ``AgentError``: workers treat a failing CDN like a failing model.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(code, message, retryable=retryable)

    def __repr__(self) -> str:
        return (
            f"MediaError(code={self.code!r}, message={self.message!r}, "
            f"retryable={self.retryable})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_media_error, (self.code, self.message, self.retryable))


def _rebuild_media_error(code: str, message: str, retryable: bool) -> MediaError:
    return MediaError(code, message, retryable=retryable)


@dataclass(frozen=True)
class StoredKey:
    """A key something is stored under, and when it was stored (timezone-aware UTC)."""

    key: str
    stored_at: datetime


@runtime_checkable
class MediaStorage(Protocol):
    """Where audio uploads and generated images are kept, addressed by a caller-chosen key."""

    def save(self, key: str, data: bytes, mime_type: str) -> StoredMedia:
        """Store `data` under `key`, replacing whatever the key held."""
        ...

    def delete(self, key: str) -> None:
        """Remove what `key` holds; a missing key is not an error."""
        ...

    def read(self, key: str) -> bytes:
        """The bytes stored under `key`; MediaError(code="not_found") when there are none."""
        ...

    def iter_keys(self, prefix: str) -> Iterator[StoredKey]:
        """Every key stored under the folder `prefix` (e.g. `audio/`), for the orphan sweep."""
        ...


def validate_key(key: str) -> str:
    """`key` itself if it is a safe logical id like `audio/<uuid>`; MediaError otherwise."""
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_LENGTH
        or not _KEY_RE.fullmatch(key)
        or ".." in key
    ):
        raise MediaError("invalid_key", f"invalid media key {key!r:.80}", retryable=False)
    return key


def build_storage(
    cloudinary_url: str | None,
    media_dir: str | Path,
    public_base_url: str,
    timeout_s: float = 30.0,
) -> MediaStorage:
    """Cloudinary when a CLOUDINARY_URL is given, else files under `media_dir`.

    `public_base_url` is the URL `media_dir` is served at, e.g. `http://localhost:3000/media`.
    """
    # Imported here: both implementations import MediaError from this module.
    from agents.media.cloudinary_store import CloudinaryMediaStorage
    from agents.media.local import LocalMediaStorage

    if cloudinary_url and cloudinary_url.strip():
        return CloudinaryMediaStorage(cloudinary_url.strip(), timeout_s=timeout_s)
    return LocalMediaStorage(media_dir, public_base_url)
