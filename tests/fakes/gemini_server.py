"""A local HTTP server that speaks enough of Gemini's REST API for the real google-genai SDK.

Point the SDK at it with ``GOOGLE_GEMINI_BASE_URL=<fake.base_url>``. It answers
``POST /{v1|v1beta}/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``
and decides what kind of call it is from the request, as the real model would be asked:

- ``generationConfig.responseModalities`` containing ``AUDIO`` -> ``speech``: inline PCM of
  the transcript spoken, as Google's TTS models answer (``tests/fakes/gemini_speech.py``);
- ``generationConfig.responseModalities`` containing ``IMAGE`` -> ``illustration``: an inline
  PNG drawn with Pillow in the requested ``imageConfig.aspectRatio`` (4:3 by default);
- a JSON response schema with ``scenes`` -> ``script``: a film script, one scene per
  ``chapter: <id>`` line of the prompt (``tests/fakes/gemini_script.py``), each narration
  ``script_narration_words`` long;
- ``generationConfig.responseMimeType == "application/json"`` -> ``story``: a JSON array with
  one chapter per note id found in the prompt; streamed, its text (or a ``reply_next`` text) is
  cut into ``story_stream_chunks`` pieces of equal length - boundaries fall mid-chapter - sent
  over ``story_stream_seconds``: the first at once, then at equal intervals;
- an ``inlineData`` audio part -> ``transcription``: ``transcription_text``;
- anything else -> ``text``: ``text_reply``.

Video generation (``POST /{v}/interactions``, ``GET /{v}/interactions/{id}``, the Files API
download) is served by ``fake.video`` (``tests/fakes/gemini_video.py``).

Note-id convention (shared with ``agents.story_builder.build_story_context``): every note in
the story context has a line that starts at column 0 with ``id: <note id>``; user-written lines
are always indented, so only those lines match ``^id: (\\S+)$``.

Faults are scripted per kind (or for ``"any"`` kind) and consumed in order, one per request.
Random faults come on top at ``fault_rate`` (chaos runs): each valid request that no scripted
fault claims draws one of ``RANDOM_FAULT_KINDS`` with probability ``fault_rate``, weighted by
``fault_mix`` (``DEFAULT_FAULT_MIX``: every kind but ``quota_day``); ``fault_counts`` counts them.
Run standalone for benchmarks:
``python -m tests.fakes.gemini_server --port 8089 --latency 0.2 --fault-rate 0.3 --seed 7``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageDraw

from tests.fakes import gemini_speech as speech
from tests.fakes.gemini_models import (
    ModelCatalog,
    not_found_message,
    thinking_error,
    thinking_of,
)
from tests.fakes.gemini_script import is_script_request, script_answer
from tests.fakes.gemini_video import FakeVideo

KINDS: tuple[str, ...] = ("transcription", "story", "script", "illustration", "speech", "text",
                          "video", "video_poll")
ANY_KIND = "any"
DEFAULT_TRANSCRIPTION = "Hello from the fake Gemini"
DEFAULT_TEXT_REPLY = "A plain answer from the fake Gemini"

# Must match agents.story_builder.NOTE_ID_PREFIX ("id: ") at the start of a line.
NOTE_ID_LINE = re.compile(r"^id: (\S+)[ \t]*$", re.MULTILINE)
_ROUTE = re.compile(
    r"^/(?P<version>v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
_MODEL_ROUTE = re.compile(r"^/(?P<version>v1|v1beta|v1alpha)/models(?:/(?P<model>[^/:]+))?$")
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

# Random fault kinds and what each looks like on the wire:
#   rate_limited  429 RESOURCE_EXHAUSTED with RetryInfo.retryDelay (per-minute quota)
#   unavailable   503 UNAVAILABLE
#   hang          no answer for ``hang_seconds`` (past the client timeout), then a normal one
#   drop          the connection closes without any answer
#   malformed     200 with a body that is not valid JSON
#   quota_day     429 with a per-day QuotaFailure (not retryable): only when asked for by mix
RANDOM_FAULT_KINDS: tuple[str, ...] = (
    "rate_limited", "unavailable", "hang", "drop", "malformed", "quota_day",
)
DEFAULT_FAULT_MIX: Mapping[str, float] = {
    "rate_limited": 1.0, "unavailable": 1.0, "hang": 1.0, "drop": 1.0, "malformed": 1.0,
}
DEFAULT_HANG_SECONDS = 65.0  # past the longest default agent timeout (story, 60 s)
DEFAULT_RATE_LIMIT_DELAY = "1s"
DEFAULT_STORY_STREAM_CHUNKS = 16
DEFAULT_SCRIPT_WORDS = 12  # words per scene of a film script (~5 s spoken)


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
    usage: dict[str, Any] | None = None
    # The fault served instead of a normal answer: a RANDOM_FAULT_KINDS name for a random one,
    # ``scripted:<action>`` for a scripted one; None for a normal answer.
    fault: str | None = None
    received_at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def generation_config(self) -> dict[str, Any]:
        config = self.body.get("generationConfig") if isinstance(self.body, dict) else None
        return config if isinstance(config, dict) else {}

    @property
    def thinking(self) -> dict[str, Any]:
        """The thinking config sent, camelCase keys (``{}``: none)."""
        return thinking_of(self.generation_config)

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
    name: str = ""
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
    modalities = speech.modalities(config)
    if "AUDIO" in modalities:
        return "speech"
    if "IMAGE" in modalities:
        return "illustration"
    if is_script_request(config):
        return "script"
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


def _daily_quota_body(retry_delay: str) -> dict[str, Any]:
    return google_error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        [quota_failure(_DAILY_QUOTA_ID), retry_info(retry_delay)],
    )


def _check_faults(rate: float, mix: Mapping[str, float]) -> dict[str, float]:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate must be between 0 and 1, not {rate!r}")
    unknown = set(mix) - set(RANDOM_FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected {RANDOM_FAULT_KINDS}")
    if any(weight < 0 for weight in mix.values()):
        raise ValueError("fault weights must not be negative")
    weights = {kind: float(weight) for kind, weight in mix.items() if weight > 0}
    if rate > 0 and not weights:
        raise ValueError("a positive fault rate needs at least one fault kind with a weight")
    return weights


def parse_fault_mix(text: str) -> dict[str, float]:
    """``"rate_limited=2,unavailable=1"`` -> weights (a bare kind weighs 1)."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, weight = item.partition("=")
        mix[kind.strip()] = float(weight) if weight else 1.0
    _check_faults(0.0, mix)
    return mix


def _check_story_stream(seconds: float, chunks: int) -> tuple[float, int]:
    if seconds < 0:
        raise ValueError(f"story stream seconds must not be negative, not {seconds!r}")
    if chunks < 1:
        raise ValueError(f"a story streams in at least one chunk, not {chunks!r}")
    return (float(seconds), int(chunks))


def split_evenly(text: str, chunks: int) -> list[str]:
    """``text`` cut into ``chunks`` pieces of (nearly) equal length, empty ones left out."""
    bounds = [len(text) * index // chunks for index in range(chunks + 1)]
    return [text[a:b] for a, b in pairwise(bounds) if b > a]


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
        fault_rate: float = 0.0,
        fault_mix: Mapping[str, float] | None = None,
        seed: int | None = None,
        hang_seconds: float = DEFAULT_HANG_SECONDS,
        rate_limit_delay: str = DEFAULT_RATE_LIMIT_DELAY,
        story_stream_seconds: float = 0.0,
        story_stream_chunks: int = DEFAULT_STORY_STREAM_CHUNKS,
    ) -> None:
        """``max_recorded`` bounds ``.requests`` (oldest dropped) for long benchmark runs.

        ``fault_rate`` (0-1) of the requests get a random fault drawn from ``fault_mix``
        (kind -> weight, ``DEFAULT_FAULT_MIX`` when None) by a ``random.Random(seed)``.
        """
        self.latency = latency
        self._initial_latency = latency
        self.latencies: dict[str, float] = {}
        # Seconds a model "thinks" before its first token, per thinking level sent (MINIMAL,
        # LOW, MEDIUM, HIGH; BUDGET for any 2.x budget above 0). Empty: thinking is free.
        self.thinking_seconds: dict[str, float] = {}
        self.script_narration_words = DEFAULT_SCRIPT_WORDS
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
        self.hang_seconds = hang_seconds
        self.rate_limit_delay = rate_limit_delay
        self._story_stream = _check_story_stream(story_stream_seconds, story_stream_chunks)
        self._initial_story_stream = self._story_stream
        self._seed = seed
        self._random = random.Random(seed)
        self._fault_rate = 0.0
        self._fault_weights: dict[str, float] = {}
        self.set_faults(fault_rate, fault_mix)
        self._initial_faults = (self._fault_rate, dict(self._fault_weights))
        self._fault_counts: dict[str, int] = dict.fromkeys(RANDOM_FAULT_KINDS, 0)
        self._last_fault_at: float | None = None
        # Which models exist and which are retired (404); tests change it, reset restores it.
        self.models = ModelCatalog()
        self.model_lookups: list[str] = []  # model names asked for with GET (models.get)
        self.video = FakeVideo(self)  # the Interactions API's video generations

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

    @property
    def fault_counts(self) -> dict[str, int]:
        """Random faults injected so far, per kind (every kind listed; scripted ones excluded)."""
        with self._lock:
            return dict(self._fault_counts)

    @property
    def fault_rate(self) -> float:
        with self._lock:
            return self._fault_rate

    @property
    def fault_mix(self) -> dict[str, float]:
        """The kinds random faults are drawn from, with their weights."""
        with self._lock:
            return dict(self._fault_weights)

    @property
    def last_fault_at(self) -> float | None:
        """``time.time()`` when the last random fault was injected (None: none yet)."""
        with self._lock:
            return self._last_fault_at

    def reset(self) -> None:
        """Forget recorded requests, scripted faults and fault counts; latencies and the random
        fault rate and mix go back to the initial ones, and the fault draws restart from the seed.
        """
        with self._lock:
            self._requests.clear()
            self._counter = 0
            self._script = _Script()
            self.latencies.clear()
            self.thinking_seconds.clear()
            self.script_narration_words = DEFAULT_SCRIPT_WORDS
            self.latency = self._initial_latency
            self._fault_rate, weights = self._initial_faults
            self._fault_weights = dict(weights)
            self._fault_counts = dict.fromkeys(RANDOM_FAULT_KINDS, 0)
            self._last_fault_at = None
            self._random = random.Random(self._seed)
            self._story_stream = self._initial_story_stream
            self.models = ModelCatalog()
            self.model_lookups.clear()
        self.video.reset()

    # --- behaviour ---------------------------------------------------------------------

    def set_story_stream(self, seconds: float, chunks: int | None = None) -> None:
        """Stream stories over ``seconds`` in ``chunks`` pieces (None: keep the chunk count)."""
        with self._lock:
            current = self._story_stream[1]
        stream = _check_story_stream(seconds, current if chunks is None else chunks)
        with self._lock:
            self._story_stream = stream

    @property
    def story_stream(self) -> tuple[float, int]:
        """``(seconds, chunks)`` of a streamed story answer."""
        with self._lock:
            return self._story_stream

    def set_latency(self, seconds: float, kind: str | None = None) -> None:
        """Delay every answer (or every answer of one kind) by ``seconds``."""
        with self._lock:
            if kind is None:
                self.latency = seconds
            else:
                self.latencies[kind] = seconds

    def set_faults(self, rate: float, mix: Mapping[str, float] | None = None) -> None:
        """Inject a random fault into ``rate`` (0-1) of the requests, its kind drawn from ``mix``
        (kind -> weight over ``RANDOM_FAULT_KINDS``; None: ``DEFAULT_FAULT_MIX``). 0 turns it off.
        """
        weights = _check_faults(rate, DEFAULT_FAULT_MIX if mix is None else mix)
        with self._lock:
            self._fault_rate = rate
            self._fault_weights = weights

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
        self._push(kind, n, _Fault("status", name="scripted:status", status=status,
                                   body=error_body))

    def quota_day_next(self, kind: str, n: int = 1, retry_delay: str = "30s") -> None:
        """The next calls fail with a per-day quota 429 (QuotaFailure ``...PerDay...``)."""
        body = _daily_quota_body(retry_delay)
        self._push(kind, n, _Fault("status", name="scripted:status", status=429, body=body))

    def hang_next(self, kind: str, seconds: float, n: int = 1) -> None:
        """The next calls wait ``seconds`` before answering normally."""
        self._push(kind, n, _Fault("hang", name="scripted:hang", seconds=seconds))

    def malformed_next(self, kind: str, n: int = 1) -> None:
        """The next calls answer 200 with a body that is not valid JSON."""
        self._push(kind, n, _Fault("malformed", name="scripted:malformed"))

    def block_next(
        self,
        kind: str,
        n: int = 1,
        reason: str = "SAFETY",
        on: Literal["prompt", "candidate"] = "prompt",
    ) -> None:
        """The next calls are safety-blocked: ``promptFeedback.blockReason`` (``on="prompt"``)
        or a candidate with ``finishReason`` ``reason`` and no content (``on="candidate"``)."""
        self._push(kind, n, _Fault("block", name="scripted:block", reason=reason, on=on))

    def reply_next(self, kind: str, text: str, n: int = 1) -> None:
        """The next calls answer with this candidate text instead of the generated one."""
        self._push(kind, n, _Fault("reply", name="scripted:reply", text=text))

    def drop_next(self, kind: str, n: int = 1) -> None:
        """The next calls close the connection without any answer."""
        self._push(kind, n, _Fault("drop", name="scripted:drop"))

    def _push(self, kind: str, n: int, fault: _Fault) -> None:
        if kind not in (*KINDS, ANY_KIND):
            raise ValueError(f"unknown kind {kind!r}; expected one of {(*KINDS, ANY_KIND)}")
        with self._lock:
            for _ in range(n):
                self._script.push(kind, fault)

    # --- used by the handler -----------------------------------------------------------

    def _record(
        self, request: RecordedRequest, *, scripted: bool = True
    ) -> tuple[_Fault | None, int]:
        """Record the request; ``scripted``: it also takes the next scripted fault of its kind
        (a request refused before any model work, e.g. for a retired model, does not)."""
        with self._lock:
            self._requests.append(request)
            self._counter += 1
            return (self._script.pop(request.kind) if scripted else None), self._counter

    def _rejection(self, request: RecordedRequest, method: str) -> tuple[int, Any] | None:
        """404 for a retired or unknown model, 400 for an invalid thinking config."""
        model = self.models.live(request.model or "")
        version = request.api_version or "v1beta"
        if model is None or (method not in model.methods and method != "streamGenerateContent"):
            wire_method = "StreamGenerateContent" if request.stream else method
            return 404, google_error(404, not_found_message(
                request.model or "", version, wire_method))
        problem = (speech.modality_error(model.name, request.generation_config)
                   or thinking_error(model, request.generation_config))
        if problem is not None:
            return 400, google_error(400, problem)
        return None

    def _draw_fault(self) -> _Fault | None:
        """One random draw per valid request the script left alone (under the lock, so a seed
        gives the same sequence of outcomes however the requests interleave)."""
        with self._lock:
            if self._fault_rate <= 0 or self._random.random() >= self._fault_rate:
                return None
            kinds = list(self._fault_weights)
            kind = self._random.choices(kinds, weights=[self._fault_weights[k] for k in kinds])[0]
            self._fault_counts[kind] += 1
            self._last_fault_at = time.time()
            delay, hang = self.rate_limit_delay, self.hang_seconds
        if kind == "rate_limited":
            return _Fault("status", name=kind, status=429, body=_default_error_body(429, delay))
        if kind == "unavailable":
            return _Fault("status", name=kind, status=503, body=_default_error_body(503, None))
        if kind == "quota_day":
            return _Fault("status", name=kind, status=429, body=_daily_quota_body("30s"))
        if kind == "hang":
            return _Fault("hang", name=kind, seconds=hang)
        if kind == "drop":
            return _Fault("drop", name=kind)
        return _Fault("malformed", name=kind)

    def _thinking_delay(self, request: RecordedRequest) -> float:
        thinking = request.thinking
        level = thinking.get("thinkingLevel")
        if level is None and (thinking.get("thinkingBudget") or 0) != 0:
            level = "BUDGET"
        with self._lock:
            return self.thinking_seconds.get(str(level).upper(), 0.0) if level else 0.0

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
        if request.kind == "speech":
            return [speech.audio_part(request.prompt_text)]
        if request.kind == "illustration":
            data, _, _ = self._png_b64(request.generation_config.get("imageConfig", {}).get(
                "aspectRatio"))
            return [{"inlineData": {"mimeType": "image/png", "data": data}}]
        if request.kind == "story":
            return [{"text": self._story(request)}]
        if request.kind == "script":
            return [{"text": script_answer(request.prompt_text, self.script_narration_words)}]
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
        if request.kind == "speech":
            usage = speech.usage(prompt_tokens, parts)
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

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (timed out, or its worker process was killed) is routine here.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


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
        fake = self.server.fake
        if fake.video.serve(self, "GET"):
            return
        route = _MODEL_ROUTE.match(urlsplit(self.path).path)
        if route is None:
            self._send_json(404, google_error(404, f"No route for {self.path}."))
            return
        if fake.require_api_key and not self.headers.get("x-goog-api-key"):
            self._send_json(403, google_error(403, "Method doesn't allow unregistered callers."))
            return
        name = route.group("model")
        if name is None:  # models.list (one page: the catalog is small)
            self._send_json(200, {"models": fake.models.listing()})
            return
        with fake._lock:
            fake.model_lookups.append(name)
        model = fake.models.live(name)
        if model is None:
            self._send_json(404, google_error(404, not_found_message(
                name, route.group("version"), "get")))
            return
        self._send_json(200, model.resource())

    def do_POST(self) -> None:
        fake = self.server.fake
        if fake.video.serve(self, "POST"):
            return
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
        if route is None or route.group("method") not in (
            "generateContent", "streamGenerateContent",
        ):
            fake._record(request, scripted=False)
            self._finish(request, 404, google_error(404, f"No route for {url.path}."))
            return
        if body is None or not isinstance(body, dict):
            fake._record(request, scripted=False)
            self._finish(request, 400, google_error(400, "Invalid JSON payload received."))
            return
        if fake.require_api_key and not request.headers.get("x-goog-api-key"):
            fake._record(request, scripted=False)
            self._finish(request, 403, google_error(
                403, "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity."))
            return
        rejection = fake._rejection(request, route.group("method"))
        if rejection is not None:
            fake._record(request, scripted=False)
            self._finish(request, *rejection)
            return
        fault, number = fake._record(request)
        if fault is None:
            fault = fake._draw_fault()
        if fault is not None and fault.action != "reply":
            request.fault = fault.name

        fake._sleep(fake._delay_for(request.kind) + fake._thinking_delay(request))
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
            self._send_stream(response, fake.story_stream if request.kind == "story" else None)
        else:
            self._send_json(200, response)

    def _finish(self, request: RecordedRequest, status: int, body: Any) -> None:
        request.status = status
        self._send_json(status, body)

    def _send_json(self, status: int, body: Any) -> None:
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self._send(status, payload, "application/json; charset=UTF-8")

    def _send_stream(
        self, response: dict[str, Any], pacing: tuple[float, int] | None = None
    ) -> None:
        # Split the single answer into one SSE event per part, then per text half (or, paced,
        # into ``chunks`` pieces sent over ``seconds``), as the real API streams; usageMetadata
        # rides on every event, like Gemini's.
        events: list[dict[str, Any]] = []
        candidate = (response.get("candidates") or [{}])[0]
        parts = (candidate.get("content") or {}).get("parts") or []
        for part in parts:
            text = part.get("text")
            pieces: list[str | None] = [None]
            if text and pacing is not None:
                pieces = list(split_evenly(text, pacing[1]))
            elif text:
                pieces = [text[: len(text) // 2], text[len(text) // 2:]]
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
        encoded = [b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events]
        if pacing is None:
            self._send(200, b"".join(encoded), "text/event-stream")
        else:
            self._send_paced(encoded, pacing[0])

    def _send_paced(self, events: list[bytes], seconds: float) -> None:
        """Send SSE events as HTTP/1.1 chunks, the first at once, the others evenly over
        ``seconds``, so the client reads each one as it comes."""
        fake = self.server.fake
        pause = seconds / (len(events) - 1) if len(events) > 1 else 0.0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index, event in enumerate(events):
                if index:
                    fake._sleep(pause)
                if fake._stopping.is_set():
                    self.close_connection = True
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            # The client stopped reading (an agent that gave up on the answer).
            self.close_connection = True

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--fault-rate", type=float, default=0.0,
                        help="share of requests (0-1) that get a random fault")
    parser.add_argument("--fault-mix", type=parse_fault_mix, default=None,
                        help="weights, e.g. rate_limited=2,unavailable=1,hang=1 "
                        f"(kinds: {', '.join(RANDOM_FAULT_KINDS)}; default: all but quota_day)")
    parser.add_argument("--hang-seconds", type=float, default=DEFAULT_HANG_SECONDS,
                        help="how long a 'hang' fault keeps the client waiting")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    parser.add_argument("--story-stream-seconds", type=float, default=0.0,
                        help="how long a streamed story takes from first to last chunk")
    parser.add_argument("--video-seconds", type=float, default=0.0,
                        help="how long a video generation takes (Interactions API)")
    parser.add_argument("--story-stream-chunks", type=int, default=DEFAULT_STORY_STREAM_CHUNKS,
                        help="how many pieces a streamed story is cut into")
    return parser


def fake_from_args(args: argparse.Namespace) -> FakeGemini:
    """The (not yet started) fake the command-line options describe."""
    fake = FakeGemini(
        latency=args.latency, host=args.host, port=args.port, max_recorded=1000,
        fault_rate=args.fault_rate, fault_mix=args.fault_mix, seed=args.seed,
        hang_seconds=args.hang_seconds,
        story_stream_seconds=args.story_stream_seconds,
        story_stream_chunks=args.story_stream_chunks,
    )
    fake.video.generation_seconds = args.video_seconds
    return fake


def main(argv: list[str] | None = None) -> None:
    """Serve a FakeGemini until interrupted (for benchmarks in other processes)."""
    fake = fake_from_args(build_parser().parse_args(argv))
    with fake:
        print(f"FakeGemini listening on {fake.base_url} (GOOGLE_GEMINI_BASE_URL); "
              f"fault rate {fake.fault_rate:.0%}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            if fake.fault_rate > 0:
                print(f"FakeGemini: {fake.request_count} requests, injected faults "
                      f"{fake.fault_counts}", flush=True)


if __name__ == "__main__":
    main()
