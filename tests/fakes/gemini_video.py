"""The fake Gemini's video generation: the Interactions API as google-genai 3.x speaks it.

Routes (the SDK's requests, snake_case JSON both ways):

- ``POST /{v}/interactions`` with ``background: true`` and a ``response_format`` of type
  ``video`` (and/or ``generation_config.video_config``): starts a generation, answers
  ``{"id", "status": "in_progress", ...}``. Every start is counted (``starts``).
- ``GET /{v}/interactions/{id}``: ``in_progress`` until ``generation_seconds`` have passed
  since its start, then the outcome scripted for that start: ``completed`` with a
  ``model_output`` step holding the video (inline base64 ``data``, or a ``uri`` of the Files
  API, as the request's ``delivery`` asks unless ``delivery`` overrides it) and ``usage``
  (5,792 video tokens a second, as Omni bills); ``failed`` with a safety-filter error
  (``filtered``) or an internal error (``error``); unknown ids answer 404.
- ``GET /{v}/files/{name}:download?alt=media``: a ``uri``-delivered video's bytes.

The video is a real MP4 (H.264 + AAC, 1280x720 or 720x1280, the requested length) made once
per shape with ffmpeg; ``min_bytes`` pads it (an MP4 ``free`` box) to test size caps.
Scripted faults use the fake's usual queue with kinds ``video`` (starts) and ``video_poll``.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tests.fakes.gemini_models import not_found_message

if TYPE_CHECKING:
    from tests.fakes.gemini_server import FakeGemini, RecordedRequest, _Handler

_CREATE = re.compile(r"^/(?P<version>v1|v1beta|v1alpha)/interactions$")
_GET = re.compile(r"^/(?P<version>v1|v1beta|v1alpha)/interactions/(?P<id>[A-Za-z0-9_-]+)$")
_DOWNLOAD = re.compile(r"^/(?P<version>v1|v1beta|v1alpha)/files/(?P<name>[a-z0-9]+):download$")
VIDEO_TOKENS_PER_SECOND = 5792
OUTCOMES = ("video", "filtered", "error", "invalid")
FILTER_MESSAGE = ("The generated video was filtered by our Responsible AI practices: it may "
                  "show a real person's likeness (celebrity).")

_clips_lock = threading.Lock()
_clips: dict[tuple[int, str], bytes] = {}


def mp4_clip(seconds: int, aspect_ratio: str = "16:9") -> bytes:
    """A real short MP4 (test pattern and a tone), made once per shape for the process."""
    key = (seconds, aspect_ratio)
    with _clips_lock:
        if key not in _clips:
            from agents.film.ffmpeg import ffmpeg_info

            size = "720x1280" if aspect_ratio == "9:16" else "1280x720"
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "clip.mp4"
                subprocess.run([
                    ffmpeg_info().path, "-hide_banner", "-loglevel", "error",
                    "-f", "lavfi", "-i", f"testsrc=s={size}:r=24:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=f=330:d={seconds}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "38", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", "-movflags", "+faststart", "-y", str(out),
                ], check=True, timeout=120, capture_output=True)
                _clips[key] = out.read_bytes()
        return _clips[key]


def padded(video: bytes, min_bytes: int) -> bytes:
    """``video`` followed by an MP4 ``free`` box, so that it is at least ``min_bytes`` long."""
    missing = min_bytes - len(video)
    if missing <= 0:
        return video
    size = max(8, missing)
    return video + struct.pack(">I", size) + b"free" + bytes(size - 8)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Generation:
    """One started generation and what it will turn out to be."""

    id: str
    model: str
    started: float
    seconds: int
    aspect_ratio: str
    delivery: str
    outcome: str
    prompt: str
    created: str = field(default_factory=_now)
    finished: float | None = None  # monotonic time of its first finished answer


class FakeVideo:
    """The video part of a ``FakeGemini`` (``fake.video``)."""

    def __init__(self, fake: FakeGemini) -> None:
        self._fake = fake
        self._lock = threading.Lock()
        self.generation_seconds = 0.0
        self.delivery: str | None = None  # None: as the request asks
        self.min_bytes = 0
        self._outcomes: deque[str] = deque()
        self._generations: dict[str, Generation] = {}
        self._files: dict[str, str] = {}  # file name -> generation id
        self.starts = 0
        self.polls = 0
        self.downloads = 0

    def reset(self) -> None:
        with self._lock:
            self.generation_seconds = 0.0
            self.delivery = None
            self.min_bytes = 0
            self._outcomes.clear()
            self._generations.clear()
            self._files.clear()
            self.starts = self.polls = self.downloads = 0

    def next_outcomes(self, outcome: str, n: int = 1) -> None:
        """The next ``n`` starts end ``outcome``: ``video`` (the default), ``filtered`` (a
        safety filter withheld it), ``error`` (an internal failure), ``invalid`` (an
        unsupported request, INVALID_ARGUMENT)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        with self._lock:
            self._outcomes.extend([outcome] * n)

    @property
    def generations(self) -> list[Generation]:
        with self._lock:
            return list(self._generations.values())

    def most_in_flight(self) -> int:
        """The most generations that were running upstream at one time (started, not yet seen
        finished by a poll)."""
        edges = sorted([(g.started, 1) for g in self.generations]
                       + [(g.finished, -1) for g in self.generations if g.finished is not None])
        most = current = 0
        for _, step in edges:
            current += step
            most = max(most, current)
        return most

    # --- serving -----------------------------------------------------------------------

    def serve(self, handler: _Handler, method: str) -> bool:
        """Answer the request if it is one of ours; False leaves it to the fake's other routes."""
        path = urlsplit(handler.path).path
        if method == "POST" and (match := _CREATE.match(path)):
            self._create(handler, match.group("version"))
        elif method == "GET" and (match := _GET.match(path)):
            self._get(handler, match.group("id"))
        elif method == "GET" and (match := _DOWNLOAD.match(path)):
            self._download(handler, match.group("name"))
        else:
            return False
        return True

    def _record(self, handler: _Handler, kind: str, body: Any, model: str | None,
                version: str | None, scripted: bool = True) -> tuple[RecordedRequest, Any]:
        from tests.fakes.gemini_server import RecordedRequest

        url = urlsplit(handler.path)
        request = RecordedRequest(
            method=handler.command, path=url.path, query={}, stream=False, body=body,
            headers={k.lower(): v for k, v in handler.headers.items()}, kind=kind,
            api_version=version, model=model)
        fault, _ = self._fake._record(request, scripted=scripted)
        return request, fault

    def _refused(self, handler: _Handler, request: RecordedRequest) -> bool:
        from tests.fakes.gemini_server import google_error

        if self._fake.require_api_key and not request.headers.get("x-goog-api-key"):
            self._answer(handler, request, 403, google_error(
                403, "Method doesn't allow unregistered callers."))
            return True
        return False

    def _faulted(self, handler: _Handler, request: RecordedRequest, fault: Any) -> bool:
        """Serve a scripted fault (status, hang, drop, malformed); True when it was the answer."""
        if fault is None:
            return False
        request.fault = fault.name
        if fault.action == "hang":
            self._fake._sleep(fault.seconds)
            return False
        if fault.action == "drop":
            request.status = 0
            handler.close_connection = True
            return True
        if fault.action == "malformed":
            request.status = 200
            handler._send(200, b'{"id": "v1_trunc', "application/json; charset=UTF-8")
            return True
        self._answer(handler, request, fault.status, fault.body)
        return True

    def _answer(self, handler: _Handler, request: RecordedRequest, status: int,
                body: Any) -> None:
        request.status = status
        handler._send_json(status, body)

    def _create(self, handler: _Handler, version: str) -> None:
        from tests.fakes.gemini_server import google_error

        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        model = str(body.get("model") or "") if isinstance(body, dict) else ""
        request, fault = self._record(handler, "video", body, model, version)
        if self._refused(handler, request):
            return
        if not isinstance(body, dict):
            self._answer(handler, request, 400, google_error(400, "Invalid JSON payload."))
            return
        if self._fake.models.live(model) is None:
            self._answer(handler, request, 404, google_error(
                404, not_found_message(model, version, "createInteraction")))
            return
        problem = _video_problem(body)
        if problem:
            self._answer(handler, request, 400, google_error(400, problem))
            return
        if self._faulted(handler, request, fault):
            return
        fmt = _video_format(body)
        with self._lock:
            self.starts += 1
            outcome = self._outcomes.popleft() if self._outcomes else "video"
            generation = Generation(
                id=f"v1_{uuid.uuid4().hex}", model=model, started=time.monotonic(),
                seconds=int(str(fmt.get("duration") or "8s").rstrip("s") or 8),
                aspect_ratio=str(fmt.get("aspect_ratio") or "16:9"),
                delivery=self.delivery or str(fmt.get("delivery") or "inline"),
                outcome=outcome, prompt=_prompt(body))
            self._generations[generation.id] = generation
        self._answer(handler, request, 200, self._resource(generation, "in_progress"))

    def _get(self, handler: _Handler, interaction_id: str) -> None:
        from tests.fakes.gemini_server import google_error

        request, fault = self._record(handler, "video_poll", None, None, None)
        if self._refused(handler, request) or self._faulted(handler, request, fault):
            return
        with self._lock:
            self.polls += 1
            generation = self._generations.get(interaction_id)
            pending = generation is not None and (
                time.monotonic() - generation.started < self.generation_seconds)
        if generation is None:
            self._answer(handler, request, 404, google_error(
                404, f"Interaction {interaction_id} not found."))
            return
        request.model = generation.model
        if pending:
            self._answer(handler, request, 200, self._resource(generation, "in_progress"))
            return
        with self._lock:
            generation.finished = generation.finished or time.monotonic()
        self._answer(handler, request, 200, self._finished(generation))

    def _download(self, handler: _Handler, name: str) -> None:
        from tests.fakes.gemini_server import google_error

        request, _ = self._record(handler, "video_poll", None, None, None, scripted=False)
        if self._refused(handler, request):
            return
        with self._lock:
            generation = self._generations.get(self._files.get(name, ""))
            self.downloads += 1
        if generation is None:
            self._answer(handler, request, 404, google_error(404, f"File {name} not found."))
            return
        request.status = 200
        handler._send(200, self._video(generation), "video/mp4")

    # --- answers -----------------------------------------------------------------------

    def _video(self, generation: Generation) -> bytes:
        return padded(mp4_clip(generation.seconds, generation.aspect_ratio), self.min_bytes)

    def _resource(self, generation: Generation, status: str) -> dict[str, Any]:
        return {"id": generation.id, "status": status, "model": generation.model,
                "object": "interaction", "created": generation.created, "updated": _now()}

    def _finished(self, generation: Generation) -> dict[str, Any]:
        resource = self._resource(generation, "completed")
        asked = {"type": "user_input", "content": [{"type": "text", "text": generation.prompt}]}
        if generation.outcome == "video":
            if generation.delivery == "uri":
                name = generation.id.removeprefix("v1_")[:24]
                with self._lock:
                    self._files[name] = generation.id
                video: dict[str, Any] = {
                    "type": "video", "mime_type": "video/mp4",
                    "uri": f"https://generativelanguage.googleapis.com/v1beta/files/{name}"
                           ":download?alt=media"}
            else:
                video = {"type": "video", "mime_type": "video/mp4",
                         "data": base64.b64encode(self._video(generation)).decode("ascii")}
            tokens = VIDEO_TOKENS_PER_SECOND * generation.seconds
            resource.update(
                steps=[asked, {"type": "model_output", "content": [video]}],
                usage={"total_input_tokens": 1290 + len(generation.prompt) // 4,
                       "total_output_tokens": tokens, "total_tokens": tokens + 1290,
                       "output_tokens_by_modality": [{"modality": "video", "tokens": tokens}]})
            return resource
        if generation.outcome == "filtered":
            error = {"code": 3, "message": FILTER_MESSAGE, "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RAI_MEDIA_FILTERED", "domain": "generativelanguage.googleapis.com",
                "metadata": {"filteredCount": "1"}}]}
        elif generation.outcome == "invalid":
            error = {"code": 3, "message": "The input image could not be used for video "
                                           "generation."}
        else:
            error = {"code": 13, "message": "Video generation failed due to an internal error."}
        resource.update(status="failed",
                        steps=[asked, {"type": "model_output", "content": [], "error": error}])
        return resource


def _video_format(body: dict[str, Any]) -> dict[str, Any]:
    formats = body.get("response_format")
    for fmt in formats if isinstance(formats, list) else [formats]:
        if isinstance(fmt, dict) and fmt.get("type") == "video":
            return fmt
    return {}


def _video_problem(body: dict[str, Any]) -> str | None:
    """What the API would refuse in a video request (400), None when it is acceptable."""
    config = body.get("generation_config") or {}
    if not _video_format(body) and not isinstance(config.get("video_config"), dict):
        return "This model only generates video: ask for a video response_format."
    if body.get("background") is not True:
        return "Video generation runs in the background: set background to true."
    fmt = _video_format(body)
    duration = str(fmt.get("duration") or "8s")
    if not re.fullmatch(r"(?:[3-9]|1[0-5])s", duration):
        return f"duration {duration} is out of range [3s, 15s]."
    if fmt.get("aspect_ratio", "16:9") not in ("16:9", "9:16"):
        return f"aspect_ratio {fmt.get('aspect_ratio')} is not supported."
    return None


def _prompt(body: dict[str, Any]) -> str:
    texts = []
    for step in body.get("input") or []:
        for content in (step.get("content") or []) if isinstance(step, dict) else []:
            if isinstance(content, dict) and content.get("type") == "text":
                texts.append(str(content.get("text") or ""))
    return "\n".join(texts)
