"""Media kept on Cloudinary, through the official SDK with per-call credentials and timeouts."""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from agents.media.sniff import normalize_mime
from agents.media.storage import MediaError, StoredKey, validate_key
from agents.types import StoredMedia

# URL query parameters accepted on CLOUDINARY_URL and passed on to every call.
_URL_OPTIONS = ("upload_prefix", "signature_algorithm", "signature_version")
_RESOURCE_TYPES = ("image", "video", "raw")
_STATUS_IN_MESSAGE = re.compile(r"(?:server response \(|^Error )(\d{3})\b")
_MAX_DETAIL = 200


class CloudinaryMediaStorage:
    """Uploads to Cloudinary; the SDK's global config is never read for credentials or mutated."""

    list_page_size = 500  # the Admin API's most assets per listing call

    def __init__(
        self, cloudinary_url: str, timeout_s: float = 30.0, upload_prefix: str | None = None
    ) -> None:
        parsed = _parse_cloudinary_url(cloudinary_url)
        self.cloud_name: str = parsed["cloud_name"]
        self._api_key: str = parsed["api_key"]
        self._api_secret: str = parsed["api_secret"]
        self.upload_prefix: str | None = upload_prefix or parsed.get("upload_prefix")
        if self.upload_prefix and urlsplit(self.upload_prefix).scheme not in ("http", "https"):
            raise ValueError("Cloudinary upload_prefix must be an http(s) URL")
        self.timeout_s = timeout_s
        self._signature_options = {
            k: (int(v) if k == "signature_version" else v)
            for k, v in parsed.items()
            if k in ("signature_algorithm", "signature_version")
        }

    def __repr__(self) -> str:
        return (
            f"CloudinaryMediaStorage(cloud_name={self.cloud_name!r}, "
            f"upload_prefix={self.upload_prefix!r}, timeout_s={self.timeout_s})"
        )

    def save(self, key: str, data: bytes, mime_type: str) -> StoredMedia:
        """Upload under public_id=`key` with overwrite, so a retried save replaces, not adds."""
        validate_key(key)
        if not data:
            # The SDK silently drops an empty file field; Cloudinary would then answer 400.
            raise MediaError("rejected", "refusing to upload an empty file", retryable=False)
        mime = normalize_mime(mime_type)
        resource_type = _resource_type_for(mime)
        import cloudinary.uploader  # the SDK reads CLOUDINARY_URL from env on import

        try:
            result = cloudinary.uploader.upload(
                io.BytesIO(data),
                public_id=key,
                overwrite=True,
                invalidate=True,
                resource_type=resource_type,
                filename=key.rsplit("/", 1)[-1],
                return_error=True,
                **self._call_options(),
            )
        except Exception as exc:
            raise self._map_exception(exc, "upload") from exc
        self._raise_for_error(result, "upload")
        extra: dict[str, object] = {
            k: result[k]
            for k in ("version", "resource_type", "format", "width", "height", "duration")
            if result.get(k) is not None
        }
        return StoredMedia(
            url=str(result.get("secure_url") or result.get("url")),
            public_id=str(result.get("public_id", key)),
            size=int(result.get("bytes") or len(data)),
            mime_type=mime,
            extra=extra,
        )

    def delete(self, key: str) -> None:
        """Destroy `key` under whichever resource type holds it; absent everywhere is fine."""
        validate_key(key)
        import cloudinary.uploader

        for resource_type in _RESOURCE_TYPES:
            try:
                result = cloudinary.uploader.destroy(
                    key,
                    resource_type=resource_type,
                    invalidate=True,
                    return_error=True,
                    **self._call_options(),
                )
            except Exception as exc:
                raise self._map_exception(exc, "delete") from exc
            self._raise_for_error(result, "delete")
            if result.get("result") == "ok":
                return

    def read(self, key: str) -> bytes:
        """Look the asset up (Admin API) and download it from its delivery URL.

        Each lookup counts against the Admin API's hourly rate limit. urllib3 retries
        idempotent GETs on read timeouts, so a hung lookup can take a few times `timeout_s`.
        """
        validate_key(key)
        import cloudinary.api
        import cloudinary.exceptions

        # Audio is stored as "video", the case read() exists for, so look there first.
        for resource_type in ("video", "image", "raw"):
            try:
                info = cloudinary.api.resource(
                    key, resource_type=resource_type, **self._call_options()
                )
            except cloudinary.exceptions.NotFound:
                continue
            except Exception as exc:
                raise self._map_exception(exc, "lookup") from exc
            return self._download(str(info.get("secure_url") or info.get("url") or ""))
        raise MediaError("not_found", f"no media stored under {key!r}", retryable=False)

    def iter_keys(self, prefix: str) -> Iterator[StoredKey]:
        """Assets under `prefix` of every resource type, a page per Admin API call.

        Each page counts against the Admin API's hourly rate limit.
        """
        validate_key(prefix.strip("/"))
        import cloudinary.api

        for resource_type in _RESOURCE_TYPES:
            cursor: str | None = None
            while True:
                try:
                    page = cloudinary.api.resources(
                        resource_type=resource_type, type="upload", prefix=prefix,
                        max_results=self.list_page_size, next_cursor=cursor,
                        **self._call_options(),
                    )
                except Exception as exc:
                    raise self._map_exception(exc, "list") from exc
                for asset in page.get("resources", []):
                    stored_at = _parse_time(asset.get("created_at"))
                    if asset.get("public_id") and stored_at is not None:
                        yield StoredKey(str(asset["public_id"]), stored_at)
                cursor = page.get("next_cursor")
                if not cursor:
                    break

    def _download(self, url: str) -> bytes:
        if urlsplit(url).scheme not in ("http", "https"):
            raise MediaError("bad_response", "Cloudinary returned no usable URL", retryable=False)
        request = urllib.request.Request(url, method="GET")  # noqa: S310 - scheme checked above
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise _status_error(exc.code, "download", None) from exc
        except TimeoutError as exc:
            raise MediaError(
                "timeout", f"Cloudinary download timed out after {self.timeout_s}s", retryable=True
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise MediaError(
                    "timeout",
                    f"Cloudinary download timed out after {self.timeout_s}s",
                    retryable=True,
                ) from exc
            raise MediaError(
                "unavailable", f"Cloudinary download failed: {type(exc).__name__}", retryable=True
            ) from exc

    def _call_options(self) -> dict[str, Any]:
        # Every setting the SDK would otherwise take from its global config is given per call;
        # oauth_token=None and upload_preset=None keep a stray env config from changing auth.
        return {
            "cloud_name": self.cloud_name,
            "api_key": self._api_key,
            "api_secret": self._api_secret,
            "oauth_token": None,
            "upload_preset": None,
            "upload_prefix": self.upload_prefix,
            "timeout": self.timeout_s,
            **self._signature_options,
        }

    def _raise_for_error(self, result: dict[str, Any], action: str) -> None:
        error = result.get("error")
        if not error:
            return
        status = int(error.get("http_code") or 0)
        raise _status_error(status, action, self._redact(str(error.get("message", ""))))

    def _map_exception(self, exc: Exception, action: str) -> MediaError:
        import cloudinary.exceptions
        import urllib3.exceptions

        if isinstance(exc, MediaError):
            return exc
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, urllib3.exceptions.MaxRetryError) and cause.reason is not None:
            cause = cause.reason
        # NewConnectionError subclasses ConnectTimeoutError, but a refused connection is no timeout.
        if isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError) and not isinstance(
            cause, urllib3.exceptions.NewConnectionError
        ):
            return MediaError(
                "timeout", f"Cloudinary {action} timed out after {self.timeout_s}s", retryable=True
            )
        if isinstance(cause, urllib3.exceptions.HTTPError | OSError):
            return MediaError(
                "unavailable",
                f"Cloudinary {action} failed: {type(cause).__name__}",
                retryable=True,
            )
        message = str(exc)
        match = _STATUS_IN_MESSAGE.search(message)
        if match:
            # Only the status is kept: these messages can quote the whole response body.
            return _status_error(int(match.group(1)), action, None)
        if isinstance(exc, cloudinary.exceptions.RateLimited):
            return _status_error(429, action, None)
        if isinstance(exc, cloudinary.exceptions.NotFound):
            return _status_error(404, action, None)
        if isinstance(exc, cloudinary.exceptions.GeneralError):
            return _status_error(500, action, self._redact(message))
        if isinstance(exc, cloudinary.exceptions.Error):
            return _status_error(400, action, self._redact(message))
        return MediaError(
            "config", f"Cloudinary {action} failed: {type(exc).__name__}", retryable=False
        )

    def _redact(self, text: str) -> str:
        for secret in (self._api_secret, self._api_key):
            if secret:
                text = text.replace(secret, "***")
        return text[:_MAX_DETAIL]


def _status_error(status: int, action: str, detail: str | None) -> MediaError:
    suffix = f": {detail}" if detail else ""
    message = f"Cloudinary {action} failed with HTTP {status}{suffix}"
    if status in (420, 429):
        return MediaError("rate_limited", message, retryable=True)
    if status >= 500 or status == 408:
        return MediaError("unavailable", message, retryable=True)
    if status == 404:
        return MediaError("not_found", message, retryable=False)
    if status in (401, 403):
        return MediaError("unauthorized", message, retryable=False)
    return MediaError("rejected", message, retryable=False)


def _resource_type_for(mime: str) -> str:
    if mime.startswith("image/"):
        return "image"
    if mime.startswith(("audio/", "video/")):
        return "video"  # Cloudinary files audio under the video resource type
    return "raw"


def _parse_cloudinary_url(url: str) -> dict[str, str]:
    """Split `cloudinary://<key>:<secret>@<cloud>[?upload_prefix=...]`; errors never echo it."""
    invalid = ValueError(
        "CLOUDINARY_URL must look like cloudinary://<api_key>:<api_secret>@<cloud_name>"
    )
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise invalid from None
    if parts.scheme != "cloudinary" or "@" not in parts.netloc:
        raise invalid
    credentials, _, cloud_name = parts.netloc.rpartition("@")
    api_key, sep, api_secret = credentials.partition(":")
    if not (sep and api_key and api_secret and cloud_name):
        raise invalid
    parsed = {
        "cloud_name": unquote(cloud_name),
        "api_key": unquote(api_key),
        "api_secret": unquote(api_secret),
    }
    for name, values in parse_qs(parts.query).items():
        if name in _URL_OPTIONS and values:
            parsed[name] = values[0]
    if "signature_version" in parsed and not parsed["signature_version"].isdigit():
        raise ValueError("CLOUDINARY_URL signature_version must be a number")
    return parsed


def _parse_time(value: object) -> datetime | None:
    """Cloudinary's ``created_at`` (ISO 8601, ``Z``) as an aware datetime; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
