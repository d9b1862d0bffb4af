"""A local HTTP server that speaks enough of Gemini's REST API for the real google-genai SDK.

Point the SDK at it with ``GOOGLE_GEMINI_BASE_URL=<fake.base_url>``. It answers
``POST /{v1|v1beta}/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``
and decides what kind of call it is from the request, as the real model would be asked:

- ``generationConfig.responseModalities`` containing ``IMAGE`` -> ``illustration``: an inline
  PNG drawn with Pillow in the requested ``imageConfig.aspectRatio`` (4:3 by default);
- ``generationConfig.responseMimeType == "application/json"`` -> ``story``: a JSON array with
  one chapter per note id found in the prompt;
- an ``inlineData`` audio part -> ``transcription``: ``transcription_text``;
- anything else -> ``text``: ``text_reply``.

Note-id convention (shared with ``agents.story_builder.build_story_context``): every note in
the story context has a line that starts at column 0 with ``id: <note id>``; user-written lines
are always indented, so only those lines match ``^id: (\\S+)$``.

Faults are scripted per kind (or for ``"any"`` kind) and consumed in order, one per request.
Run standalone for benchmarks: ``python -m tests.fakes.gemini_server --port 8089``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageDraw

KINDS: tuple[str, ...] = ("transcription", "story", "illustration", "text")
ANY_KIND = "any"
DEFAULT_TRANSCRIPTION = "Hello from the fake Gemini"
DEFAULT_TEXT_REPLY = "A plain answer from the fake Gemini"

# Must match agents.story_builder.NOTE_ID_PREFIX ("id: ") at the start of a line.
NOTE_ID_LINE = re.compile(r"^id: (\S+)[ \t]*$", re.MULTILINE)
_ROUTE = re.compile(
    r"^/(?P<version>v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
_DAILY_QUOTA_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
_STATUS_NAMES: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

FaultAction = Literal["status", "hang", "malformed", "block", "reply", "drop"]


@dataclass
class RecordedRequest:
    """One request as the fake received it (``headers`` keys are lower-case)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    kind: str
    api_version: str | None
    model: str | None
    stream: bool
    status: int | None = None
    usage: dict[str, int] | None = None

    @property
    def generation_config(self) -> dict[str, Any]:
        config = self.body.get("generationConfig") if isinstance(self.body, dict) else None
        return config if isinstance(config, dict) else {}

    @property
    def prompt_text(self) -> str:
        """Every text part of ``contents`` and ``systemInstruction``, joined by newlines."""
        return "\n".join(_text_parts(self.body))

    @property
    def system_instruction(self) -> str:
        if not isinstance(self.body, dict):
            return ""
        return "\n".join(_text_parts({"contents": [self.body.get("systemInstruction") or {}]}))

    @property
    def inline_data(self) -> list[dict[str, Any]]:
        return list(_inline_parts(self.body))


@dataclass
class _Fault:
    action: FaultAction
    status: int = 200
    body: Any = None
    seconds: float = 0.0
    text: str | None = None
    reason: str = "SAFETY"
    on: Literal["prompt", "candidate"] = "prompt"


@dataclass
class _Script:
    queues: dict[str, deque[_Fault]] = field(default_factory=dict)

    def push(self, kind: str, fault: _Fault) -> None:
        self.queues.setdefault(kind, deque()).append(fault)

    def pop(self, kind: str) -> _Fault | None:
        for key in (kind, ANY_KIND):
            queue = self.queues.get(key)
            if queue:
                return queue.popleft()
        return None


def _parts(body: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(body, dict):
        return
    contents = body.get("contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    for content in contents:
        if isinstance(content, dict):
            for part in content.get("parts") or []:
                if isinstance(part, dict):
                    yield part


def _text_parts(body: Any) -> Iterator[str]:
    if isinstance(body, dict) and isinstance(body.get("systemInstruction"), dict):
        for part in body["systemInstruction"].get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]
    for part in _parts(body):
        if isinstance(part.get("text"), str):
            yield part["text"]


def _inline_parts(body: Any) -> Iterator[dict[str, Any]]:
    for part in _parts(body):
        inline = part.get("inlineData")
        if isinstance(inline, dict):
            yield inline


def _mime_type(inline: Mapping[str, Any]) -> str:
    # Proto JSON accepts both spellings and the SDK sends ``mime_type`` inside ``inlineData``.
    return str(inline.get("mimeType") or inline.get("mime_type") or "")


def classify(body: Any) -> str:
    """Which kind of call a generateContent body is (see the module docstring)."""
    config = body.get("generationConfig") if isinstance(body, dict) else None
    config = config if isinstance(config, dict) else {}
    modalities = [str(m).upper() for m in config.get("responseModalities") or []]
    if "IMAGE" in modalities:
        return "illustration"
    if config.get("responseMimeType") == "application/json":
        return "story"
    if any(_mime_type(p).startswith("audio/") for p in _inline_parts(body)):
        return "transcription"
    return "text"


def google_error(
    status: int,
    message: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An error body in Google's JSON shape."""
    error: dict[str, Any] = {
        "code": status,
        "message": message or f"Fake Gemini error {status}.",
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(quota_id: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": "fake"},
                "quotaValue": "250",
            }
        ],
    }


def _default_error_body(status: int, retry_delay: str | None) -> dict[str, Any]:
    if status == 429:
        details = [quota_failure("GenerateRequestsPerMinutePerProjectPerModel")]
        if retry_delay:
            details.append(retry_info(retry_delay))
        return google_error(429, "Resource has been exhausted (e.g. check quota).", details)
    if status == 503:
        return google_error(503, "The model is overloaded. Please try again later.")
    if status == 400:
        return google_error(400, "Request contains an invalid argument.")
    return google_error(status)


def _aspect(ratio: object) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+):(\d+)", str(ratio or "4:3"))
    if not match or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        return (4, 3)
    return (int(match.group(1)), int(match.group(2)))


class FakeGemini:
    """A threaded local Gemini look-alike with scripted latency and faults."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        transcription_text: str = DEFAULT_TRANSCRIPTION,
        text_reply: str = DEFAULT_TEXT_REPLY,
        image_width: int = 400,
        require_api_key: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        max_recorded: int | None = None,
    ) -> None:
        """``max_recorded`` bounds ``.requests`` (oldest dropped) for long benchmark runs."""
        self.latency = latency
        self._initial_latency = latency
        self.latencies: dict[str, float] = {}
        self.transcription_text = transcription_text
        self.text_reply = text_reply
        self.image_width = image_width
        self.require_api_key = require_api_key
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._requests: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._script = _Script()
        self._images: dict[tuple[int, int], str] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0  # every request ever received, recorded or not

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeGemini:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="fake-gemini", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in latency or hang_next
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGemini is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- inspection --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests arrived since start or the last ``reset``."""
        with self._lock:
            return self._counter

    def requests_of(self, kind: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == kind]

    def reset(self) -> None:
        """Forget recorded requests and scripted faults; latencies go back to the initial one."""
        with self._lock:
            self._requests.clear()
            self._counter = 0
            self._script = _Script()
            self.latencies.clear()
            self.latency = self._initial_latency

    # --- behaviour ---------------------------------------------------------------------

    def set_latency(self, seconds: float, kind: str | None = None) -> None:
        """Delay every answer (or every answer of one kind) by ``seconds``."""
        with self._lock:
            if kind is None:
                self.latency = seconds
            else:
                self.latencies[kind] = seconds

    def fail_next(
        self,
        kind: str,
        n: int = 1,
        status: int = 429,
        retry_delay: str | None = "2s",
        body: Any = None,
    ) -> None:
        """The next ``n`` calls of ``kind`` answer ``status`` with a Google-shaped error body
        (a 429 carries ``RetryInfo.retryDelay``); ``body`` (dict or raw str) replaces it."""
        error_body = body if body is not None else _default_error_body(status, retry_delay)
        self._push(kind, n, _Fault("status", status=status, body=error_body))

    def quota_day_next(self, kind: str, n: int = 1, retry_delay: str = "30s") -> None:
        """The next calls fail with a per-day quota 429 (QuotaFailure ``...PerDay...``)."""
        body = google_error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            [quota_failure(_DAILY_QUOTA_ID), retry_info(retry_delay)],
        )
        self._push(kind, n, _Fault("status", status=429, body=body))

    def hang_next(self, kind: str, seconds: float, n: int = 1) -> None:
        """The next calls wait ``seconds`` before answering normally."""
        self._push(kind, n, _Fault("hang", seconds=seconds))

    def malformed_next(self, kind: str, n: int = 1) -> None:
        """The next calls answer 200 with a body that is not valid JSON."""
        self._push(kind, n, _Fault("malformed"))

    def block_next(
        self,
        kind: str,
        n: int = 1,
        reason: str = "SAFETY",
        on: Literal["prompt", "candidate"] = "prompt",
    ) -> None:
        """The next calls are safety-blocked: ``promptFeedback.blockReason`` (``on="prompt"``)
        or a candidate with ``finishReason`` ``reason`` and no content (``on="candidate"``)."""
        self._push(kind, n, _Fault("block", reason=reason, on=on))

    def reply_next(self, kind: str, text: str, n: int = 1) -> None:
        """The next calls answer with this candidate text instead of the generated one."""
        self._push(kind, n, _Fault("reply", text=text))

    def drop_next(self, kind: str, n: int = 1) -> None:
        """The next calls close the connection without any answer."""
        self._push(kind, n, _Fault("drop"))

    def _push(self, kind: str, n: int, fault: _Fault) -> None:
        if kind not in (*KINDS, ANY_KIND):
            raise ValueError(f"unknown kind {kind!r}; expected one of {(*KINDS, ANY_KIND)}")
        with self._lock:
            for _ in range(n):
                self._script.push(kind, fault)

    # --- used by the handler -----------------------------------------------------------

    def _record(self, request: RecordedRequest) -> tuple[_Fault | None, int]:
        with self._lock:
            self._requests.append(request)
            self._counter += 1
            return self._script.pop(request.kind), self._counter

    def _delay_for(self, kind: str) -> float:
        with self._lock:
            return self.latencies.get(kind, self.latency)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _png_b64(self, aspect_ratio: object) -> tuple[str, int, int]:
        ratio_w, ratio_h = _aspect(aspect_ratio)
        width = self.image_width
        height = max(1, round(width * ratio_h / ratio_w))
        with self._lock:
            cached = self._images.get((width, height))
        if cached is None:
            image = Image.new("RGB", (width, height), (70, 110, 160))
            draw = ImageDraw.Draw(image)
            draw.ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4),
                         fill=(240, 200, 90))
            draw.text((10, 10), "fake gemini", fill=(255, 255, 255))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            cached = base64.b64encode(buffer.getvalue()).decode("ascii")
            with self._lock:
                self._images[(width, height)] = cached
        return cached, width, height

    def _story(self, request: RecordedRequest) -> str:
        ids = list(dict.fromkeys(NOTE_ID_LINE.findall(request.prompt_text)))
        chapters = [
            {
                "title": f"Chapter {index}",
                "content": f"The fake story of note {note_id}.",
                "illustrationPrompt": f"A quiet scene inspired by note {note_id}",
                "sourceNoteId": note_id,
            }
            for index, note_id in enumerate(ids, start=1)
        ]
        return json.dumps(chapters)

    def _answer_parts(self, request: RecordedRequest, fault: _Fault | None) -> list[dict]:
        if fault is not None and fault.action == "reply":
            return [{"text": fault.text or ""}]
        if request.kind == "illustration":
            data, _, _ = self._png_b64(request.generation_config.get("imageConfig", {}).get(
                "aspectRatio"))
            return [{"inlineData": {"mimeType": "image/png", "data": data}}]
        if request.kind == "story":
            return [{"text": self._story(request)}]
        if request.kind == "transcription":
            return [{"text": self.transcription_text}]
        return [{"text": self.text_reply}]

    def _response(
        self, request: RecordedRequest, fault: _Fault | None, number: int
    ) -> dict[str, Any]:
        prompt_tokens = max(1, len(request.prompt_text) // 4) + 32 * len(request.inline_data)
        if fault is not None and fault.action == "block":
            usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
            request.usage = usage
            if fault.on == "prompt":
                return {"promptFeedback": {"blockReason": fault.reason}, "usageMetadata": usage,
                        "modelVersion": request.model}
            return {
                "candidates": [{"finishReason": fault.reason, "index": 0}],
                "usageMetadata": usage,
                "modelVersion": request.model,
            }
        parts = self._answer_parts(request, fault)
        output_tokens = sum(max(1, len(p.get("text", "")) // 4) for p in parts if "text" in p)
        output_tokens += sum(1290 for p in parts if "inlineData" in p)
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        }
        request.usage = usage
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": parts},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": usage,
            "modelVersion": request.model,
            "responseId": f"fake-{number}",
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: benchmarks open many connections at once
    fake: FakeGemini


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr lines."""

    def do_GET(self) -> None:
        self._send_json(404, google_error(404, "Only generateContent is faked."))

    def do_POST(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        route = _ROUTE.match(url.path)
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        request = RecordedRequest(
            method="POST",
            path=url.path,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            kind=classify(body),
            api_version=route.group("version") if route else None,
            model=route.group("model") if route else None,
            stream=bool(route and route.group("method") == "streamGenerateContent"),
        )
        fault, number = fake._record(request)
        if route is None or route.group("method") not in (
            "generateContent", "streamGenerateContent",
        ):
            self._finish(request, 404, google_error(404, f"No route for {url.path}."))
            return
        if body is None or not isinstance(body, dict):
            self._finish(request, 400, google_error(400, "Invalid JSON payload received."))
            return
        if fake.require_api_key and not request.headers.get("x-goog-api-key"):
            self._finish(request, 403, google_error(
                403, "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity."))
            return

        fake._sleep(fake._delay_for(request.kind))
        if fault is not None and fault.action == "hang":
            fake._sleep(fault.seconds)
        if fake._stopping.is_set():
            self.close_connection = True
            return
        if fault is not None and fault.action == "drop":
            request.status = 0
            self.close_connection = True
            return
        if fault is not None and fault.action == "status":
            self._finish(request, fault.status, fault.body)
            return
        if fault is not None and fault.action == "malformed":
            request.status = 200
            payload = b'{"candidates": [{"content": {"parts": [{"text": "trunc'
            if request.stream:
                self._send(200, b"data: " + payload + b"\r\n\r\n", "text/event-stream")
            else:
                self._send(200, payload, "application/json; charset=UTF-8")
            return

        response = fake._response(request, fault, number)
        request.status = 200
        if request.stream:
            self._send_stream(response)
        else:
            self._send_json(200, response)

    def _finish(self, request: RecordedRequest, status: int, body: Any) -> None:
        request.status = status
        self._send_json(status, body)

    def _send_json(self, status: int, body: Any) -> None:
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self._send(status, payload, "application/json; charset=UTF-8")

    def _send_stream(self, response: dict[str, Any]) -> None:
        # Split the single answer into one SSE event per part, then per text half, as the
        # real API streams; usageMetadata rides on every event, like Gemini's.
        events: list[dict[str, Any]] = []
        candidate = (response.get("candidates") or [{}])[0]
        parts = (candidate.get("content") or {}).get("parts") or []
        for part in parts:
            text = part.get("text")
            pieces = [text[: len(text) // 2], text[len(text) // 2:]] if text else [None]
            for piece in pieces:
                chunk_part = {"text": piece} if piece is not None else part
                events.append({
                    "candidates": [{"content": {"role": "model", "parts": [chunk_part]},
                                    "index": 0}],
                    "usageMetadata": response["usageMetadata"],
                    "modelVersion": response.get("modelVersion"),
                })
        if events:
            events[-1]["candidates"][0]["finishReason"] = candidate.get("finishReason", "STOP")
        else:
            events.append(response)
        payload = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
        self._send(200, payload, "text/event-stream")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout fired during a scripted hang).
            self.close_connection = True


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeGemini until interrupted (for benchmarks in other processes)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    args = parser.parse_args(argv)
    fake = FakeGemini(latency=args.latency, host=args.host, port=args.port, max_recorded=1000)
    with fake:
        print(f"FakeGemini listening on {fake.base_url} (GOOGLE_GEMINI_BASE_URL)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
