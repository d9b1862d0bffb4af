"""Media kept as files under a local directory that the API serves at `/media/<path>`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from agents.media.sniff import (
    EXTENSION_BY_MIME,
    FALLBACK_EXTENSION,
    MIME_BY_EXTENSION,
    extension_for,
    normalize_mime,
)
from agents.media.storage import MediaError, StoredKey, validate_key
from agents.types import StoredMedia

_KNOWN_EXTENSIONS: tuple[str, ...] = (*EXTENSION_BY_MIME.values(), FALLBACK_EXTENSION)


class LocalMediaStorage:
    """Files at `<media_dir>/<key>.<ext>`, served at `<public_base_url>/<key>.<ext>`."""

    def __init__(self, media_dir: str | Path, public_base_url: str) -> None:
        self.media_dir = Path(media_dir).resolve()
        self.public_base_url = public_base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"LocalMediaStorage(media_dir={str(self.media_dir)!r})"

    def save(self, key: str, data: bytes, mime_type: str) -> StoredMedia:
        """Write atomically (temp file + rename) so readers never see a half-written file."""
        validate_key(key)
        mime = normalize_mime(mime_type)
        ext = extension_for(mime)
        target = self.media_dir / f"{key}.{ext}"
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=f".{ext}")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp_name, 0o644)  # served files; mkstemp creates them 0600
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        # Saving a key again with another type must not leave the old file beside the new one.
        for stale in self._files_for(key):
            if stale != target:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        relative = f"{key}.{ext}"
        return StoredMedia(
            url=f"{self.public_base_url}/{relative}",
            public_id=key,
            size=len(data),
            mime_type=mime,
            extra={"relative_path": relative},
        )

    def delete(self, key: str) -> None:
        validate_key(key)
        for path in self._files_for(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def read(self, key: str) -> bytes:
        validate_key(key)
        for path in self._files_for(key):
            with contextlib.suppress(FileNotFoundError):
                return path.read_bytes()
        raise MediaError("not_found", f"no media stored under {key!r}", retryable=False)

    def iter_keys(self, prefix: str) -> Iterator[StoredKey]:
        """Stored files under `prefix`; temp files of saves in progress (dotfiles) are skipped."""
        folder = prefix.strip("/")
        validate_key(folder)
        root = self.media_dir / folder
        if not root.is_dir():
            return
        for path in sorted(root.rglob("*")):
            if path.name.startswith(".") or not path.is_file():
                continue
            stem, _, ext = path.name.rpartition(".")
            if not stem or ext not in _KNOWN_EXTENSIONS:
                continue
            key = path.with_name(stem).relative_to(self.media_dir).as_posix()
            try:
                stored_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:  # deleted meanwhile
                continue
            yield StoredKey(key, stored_at)

    def resolve(self, relative_path: str) -> Path | None:
        """The file a `/media/<relative_path>` URL names, or None if it is missing or unsafe."""
        if not relative_path or "\\" in relative_path or "\x00" in relative_path:
            return None
        try:
            validate_key(relative_path)
        except MediaError:
            return None
        candidate = (self.media_dir / relative_path).resolve()
        # resolve() follows symlinks, so a link pointing outside the root is refused here too.
        if not candidate.is_relative_to(self.media_dir) or not candidate.is_file():
            return None
        return candidate

    @staticmethod
    def mime_type_of(path: Path) -> str:
        """The MIME type to serve a stored file with, from its extension."""
        return MIME_BY_EXTENSION.get(path.suffix.lstrip(".").lower(), "application/octet-stream")

    def _files_for(self, key: str) -> list[Path]:
        base = self.media_dir / key
        # One os.path call per extension (pathlib builds two objects per candidate).
        prefix = f"{base}."
        return [Path(prefix + ext) for ext in _KNOWN_EXTENSIONS if os.path.isfile(prefix + ext)]
