"""A local HTTP server that speaks enough of Cloudinary's Upload, Admin and delivery APIs.

The real `cloudinary` SDK talks to it through `upload_prefix`; faults (status codes, malformed
bodies, hangs, latency) are injected per request. Signatures are verified with the secret the
fake was built with, and the secret never appears in any response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from PIL import Image, UnidentifiedImageError

_UPLOAD_PATH = re.compile(
    r"^/v1_1/(?P<cloud>[^/]+)/(?P<rt>image|video|raw)/(?P<action>upload|destroy)$"
)
_LIST_PATH = re.compile(r"^/v1_1/(?P<cloud>[^/]+)/resources/(?P<rt>image|video|raw)/upload$")
_RESOURCE_PATH = re.compile(
    r"^/v1_1/(?P<cloud>[^/]+)/resources/(?P<rt>image|video|raw)/upload/(?P<id>.+)$"
)
_DELIVERY_PATH = re.compile(
    r"^/(?P<cloud>[^/]+)/(?P<rt>image|video|raw)/upload/(?:v(?P<version>\d+)/)?(?P<rest>.+)$"
)
_AUDIO_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1a\x45\xdf\xa3", "webm"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (0, b"ID3", "mp3"),
    (8, b"WAVE", "wav"),
    (4, b"ftyp", "m4a"),
    (8, b"AIFF", "aiff"),
)
_CONTENT_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
    "webm": "audio/webm", "ogg": "audio/ogg", "flac": "audio/flac", "mp3": "audio/mpeg",
    "wav": "audio/wav", "m4a": "audio/mp4", "aiff": "audio/aiff",
}


@dataclass
class StoredAsset:
    public_id: str
    resource_type: str
    data: bytes
    version: int
    format: str | None
    width: int | None = None
    height: int | None = None
    created_at: float = field(default_factory=time.time)


@dataclass
class UploadRecord:
    """One accepted upload request: its signed parameters (never the signature) and size."""

    public_id: str
    resource_type: str
    size: int
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    status: int = 0
    body: bytes | None = None
    hang_s: float = 0.0


class FakeCloudinary:
    """`with FakeCloudinary() as fake:` then point the SDK at `fake.upload_prefix`."""

    def __init__(
        self,
        cloud_name: str = "fake-cloud",
        api_key: str = "111122223333",
        api_secret: str = "fake-secret-do-not-leak",
        latency: float = 0.0,
    ) -> None:
        self.cloud_name = cloud_name
        self.api_key = api_key
        self._api_secret = api_secret
        self.latency = latency
        self.assets: dict[tuple[str, str], StoredAsset] = {}
        self.uploads: list[UploadRecord] = []
        self.requests: list[tuple[str, str]] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._last_version = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeCloudinary:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # releases handlers parked in a hang
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeCloudinary:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeCloudinary is not started"
        return int(self._server.server_address[1])

    @property
    def upload_prefix(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cloudinary_url(self) -> str:
        """A CLOUDINARY_URL for this fake, carrying upload_prefix as the SDK's query option."""
        return (
            f"cloudinary://{self.api_key}:{self._api_secret}@{self.cloud_name}"
            f"?upload_prefix={self.upload_prefix}"
        )

    @property
    def api_secret(self) -> str:
        return self._api_secret

    # -- faults and inspection --------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 500, body: bytes | None = None) -> None:
        """Answer the next `n` requests with `status` (a Cloudinary error JSON unless `body`)."""
        with self._lock:
            self._faults.extend(_Fault(status=status, body=body) for _ in range(n))

    def hang_next(self, seconds: float, n: int = 1) -> None:
        """Hold the next `n` requests for `seconds` before handling them normally."""
        with self._lock:
            self._faults.extend(_Fault(hang_s=seconds) for _ in range(n))

    def upload_count(self, public_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for u in self.uploads if public_id is None or u.public_id == public_id)

    def asset(self, public_id: str, resource_type: str | None = None) -> StoredAsset | None:
        with self._lock:
            for (rt, pid), found in self.assets.items():
                if pid == public_id and resource_type in (None, rt):
                    return found
        return None

    # -- request handling (called from server threads) ---------------------------------------

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _next_version(self) -> int:
        self._last_version = max(self._last_version + 1, int(time.time()))
        return self._last_version

    def _url(self, asset: StoredAsset) -> str:
        name = asset.public_id if asset.format is None else f"{asset.public_id}.{asset.format}"
        return (
            f"{self.upload_prefix}/{self.cloud_name}/{asset.resource_type}/upload/"
            f"v{asset.version}/{name}"
        )

    def _describe(self, asset: StoredAsset, **extra: object) -> dict[str, Any]:
        url = self._url(asset)
        body: dict[str, Any] = {
            "asset_id": uuid.uuid5(uuid.NAMESPACE_URL, asset.public_id).hex,
            "public_id": asset.public_id,
            "version": asset.version,
            "version_id": uuid.uuid4().hex,
            "format": asset.format,
            "resource_type": asset.resource_type,
            "type": "upload",
            "bytes": len(asset.data),
            "width": asset.width,
            "height": asset.height,
            "url": url,
            "secure_url": url,
            "etag": hashlib.md5(asset.data, usedforsecurity=False).hexdigest(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(asset.created_at)),
            "tags": [],
        }
        if asset.resource_type == "video":
            body["is_audio"] = True
        body.update(extra)
        return {k: v for k, v in body.items() if v is not None}

    def _signature_ok(self, fields: dict[str, str]) -> bool:
        signature = fields.get("signature", "")
        to_sign = "&".join(
            sorted(
                f"{k}={v}".replace("&", "%26")
                for k, v in fields.items()
                if k not in ("file", "api_key", "signature") and v
            )
        )
        candidates = (
            hashlib.sha1((to_sign + self._api_secret).encode(), usedforsecurity=False).hexdigest(),
            hashlib.sha256((to_sign + self._api_secret).encode()).hexdigest(),
        )
        return any(hmac.compare_digest(signature, c) for c in candidates)

    def _check_signed(self, fields: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        for required in ("api_key", "timestamp", "signature"):
            if not fields.get(required):
                return 401, _error(f"Missing required parameter - {required}")
        if fields["api_key"] != self.api_key:
            return 401, _error("Unknown API key")
        if not self._signature_ok(fields):
            return 401, _error("Invalid Signature")
        return None

    def handle_upload(
        self, cloud: str, rt: str, fields: dict[str, str], file: bytes | None
    ) -> tuple[int, dict[str, Any]]:
        if cloud != self.cloud_name:
            return 401, _error("Invalid cloud_name")
        failure = self._check_signed(fields)
        if failure:
            return failure
        if not file:
            return 400, _error("Missing required parameter - file")
        fmt, width, height = _inspect(rt, file)
        if rt != "raw" and fmt is None:
            kind = "image" if rt == "image" else "video"
            return 400, _error(f"Invalid {kind} file")
        public_id = fields.get("public_id") or uuid.uuid4().hex[:20]
        with self._lock:
            existing = self.assets.get((rt, public_id))
            if existing is not None and fields.get("overwrite") == "0":
                return 200, self._describe(existing, existing=True)
            asset = StoredAsset(public_id, rt, file, self._next_version(), fmt, width, height)
            self.assets[(rt, public_id)] = asset
            params = {k: v for k, v in fields.items() if k not in ("file", "signature")}
            self.uploads.append(UploadRecord(public_id, rt, len(file), params))
            return 200, self._describe(asset, overwritten=existing is not None)

    def handle_destroy(
        self, cloud: str, rt: str, fields: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if cloud != self.cloud_name:
            return 401, _error("Invalid cloud_name")
        failure = self._check_signed(fields)
        if failure:
            return failure
        with self._lock:
            removed = self.assets.pop((rt, fields.get("public_id", "")), None)
        return 200, {"result": "ok" if removed else "not found"}

    def _admin_authorized(self, cloud: str, authorization: str | None) -> bool:
        expected = "Basic " + base64.b64encode(
            f"{self.api_key}:{self._api_secret}".encode()
        ).decode()
        return cloud == self.cloud_name and hmac.compare_digest(authorization or "", expected)

    def handle_list(
        self, cloud: str, rt: str, query: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Admin API ``GET /resources/<rt>/upload``: by public id, ``max_results`` a page."""
        if not self._admin_authorized(cloud, authorization):
            return 401, _error("Invalid credentials")
        prefix = query.get("prefix", "")
        size = int(query.get("max_results") or 10)
        start = int(query.get("next_cursor") or 0)
        with self._lock:
            found = sorted(
                (a for (art, pid), a in self.assets.items()
                 if art == rt and pid.startswith(prefix)),
                key=lambda a: a.public_id,
            )
            page = [self._describe(a) for a in found[start:start + size]]
        body: dict[str, Any] = {"resources": page}
        if start + size < len(found):
            body["next_cursor"] = str(start + size)
        return 200, body

    def handle_resource(
        self, cloud: str, rt: str, public_id: str, authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        if not self._admin_authorized(cloud, authorization):
            return 401, _error("Invalid credentials")
        with self._lock:
            asset = self.assets.get((rt, public_id))
            if asset is None:
                return 404, _error(f"Resource not found - {public_id}")
            return 200, self._describe(asset)

    def handle_delivery(self, cloud: str, rt: str, rest: str) -> StoredAsset | None:
        if cloud != self.cloud_name:
            return None
        with self._lock:
            candidates = [rest, rest.rpartition(".")[0]]
            for public_id in candidates:
                asset = self.assets.get((rt, public_id))
                if asset is not None:
                    return asset
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeCloudinary

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts) make writes fail; that is the point of a hang.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        path = self.path.split("?", 1)[0]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with fake._lock:
            fake.requests.append((method, path))
        if fake.latency:
            fake._stopping.wait(fake.latency)
        fault = fake._next_fault()
        if fault is not None and fault.hang_s:
            if fake._stopping.wait(fault.hang_s):
                return
        elif fault is not None:
            payload = fault.body if fault.body is not None else json.dumps(
                _error(f"Fake failure {fault.status}")
            ).encode()
            content_type = "application/json" if fault.body is None else "text/html"
            self._send(fault.status, payload, content_type)
            return

        if method == "POST" and (m := _UPLOAD_PATH.match(path)):
            fields, file = _parse_multipart(self.headers.get("Content-Type", ""), body)
            if m["action"] == "upload":
                status, result = fake.handle_upload(m["cloud"], m["rt"], fields, file)
            else:
                status, result = fake.handle_destroy(m["cloud"], m["rt"], fields)
            self._send_json(status, result)
        elif method == "GET" and (m := _LIST_PATH.match(path)):
            query = dict(parse_qsl(self.path.partition("?")[2]))
            status, result = fake.handle_list(
                m["cloud"], m["rt"], query, self.headers.get("Authorization")
            )
            self._send_json(status, result)
        elif method == "GET" and (m := _RESOURCE_PATH.match(path)):
            status, result = fake.handle_resource(
                m["cloud"], m["rt"], m["id"], self.headers.get("Authorization")
            )
            self._send_json(status, result)
        elif method == "GET" and (m := _DELIVERY_PATH.match(path)):
            asset = fake.handle_delivery(m["cloud"], m["rt"], m["rest"])
            if asset is None:
                self._send(404, b"Not found", "text/plain")
            else:
                content_type = _CONTENT_TYPES.get(asset.format or "", "application/octet-stream")
                self._send(200, asset.data, content_type)
        else:
            self._send_json(404, _error(f"No route for {method} {path}"))

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        self.end_headers()
        self.wfile.write(payload)


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message}}


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], bytes | None]:
    """Form fields (text) and the `file` part (bytes) of a multipart/form-data body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return {}, None
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    file: bytes | None = None
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # closing delimiter
        head, _, content = part[2:].partition(b"\r\n\r\n")  # part[2:] drops the CRLF after it
        content = content.removesuffix(b"\r\n")
        name_match = re.search(rb'name="([^"]*)"', head)
        if not name_match:
            continue
        name = name_match.group(1).decode()
        if name == "file":
            file = content
        else:
            fields[name] = content.decode()
    return fields, file


def _inspect(resource_type: str, data: bytes) -> tuple[str | None, int | None, int | None]:
    """(format, width, height) the way Cloudinary would report them, or format None if unusable."""
    if resource_type == "image":
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt = (image.format or "").lower()
                return ("jpg" if fmt == "jpeg" else fmt), image.width, image.height
        except (UnidentifiedImageError, OSError):
            return None, None, None
    if resource_type == "video":
        for offset, magic, fmt in _AUDIO_MAGIC:
            if data[offset:offset + len(magic)] == magic:
                return fmt, None, None
        if data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
            return "mp3", None, None
        return None, None, None
    return None, None, None
