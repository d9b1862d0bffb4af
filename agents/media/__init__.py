"""Media storage (local files or Cloudinary) and upload type checks.

Imports nothing from the rest of the project except `agents.types`.
"""

from agents.media.cloudinary_store import CloudinaryMediaStorage
from agents.media.local import LocalMediaStorage
from agents.media.sniff import (
    AUDIO_MIME_TYPES,
    IMAGE_MIME_TYPES,
    check_declared_matches,
    extension_for,
    normalize_mime,
    sniff_mime,
)
from agents.media.storage import MediaError, MediaStorage, build_storage, validate_key

__all__ = [
    "AUDIO_MIME_TYPES",
    "IMAGE_MIME_TYPES",
    "CloudinaryMediaStorage",
    "LocalMediaStorage",
    "MediaError",
    "MediaStorage",
    "build_storage",
    "check_declared_matches",
    "extension_for",
    "normalize_mime",
    "sniff_mime",
    "validate_key",
]
