"""Narrator clips from a Gemini video model, through the Interactions API.

On the Gemini API, google-genai 3.x makes video only through ``client.interactions``
(``models.generate_videos`` raises "only supported in Gemini Enterprise Agent Platform mode").
One clip is one *background* interaction::

    POST /{v}/interactions      {"model", "background": true,
                                 "input": [{"type": "user_input", "content": [text, image]}],
                                 "generation_config": {"video_config": {"task": "image_to_video"}},
                                 "response_format": {"type": "video", "aspect_ratio", "duration",
                                                     "resolution", "delivery"}}
        -> {"id", "status": "in_progress", ...}
    GET  /{v}/interactions/{id} -> {"status": "completed", "steps": [..., {"type": "model_output",
                                    "content": [{"type": "video", "mime_type", "data" | "uri"}]}],
                                    "usage": {"output_tokens_by_modality": [...], ...}}

``start`` is the only call that can cost money, and is never retried here: the client makes
one attempt per request (``agents.gemini.get_client``). A start whose answer never came back
may have started a generation: it fails with ``upstream_unconfirmed`` rather than risk paying
twice. ``poll`` (one GET) and ``fetch`` (decode or download the finished clip) may be
repeated at will.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
from pathlib import Path
from typing import Any

from google.genai import types

from agents import gemini
from agents.config import AgentSettings
from agents.errors import SDK_ERRORS, AgentError, from_sdk_error, from_status
from agents.models import availability
from agents.narrator.clip import finish_clip
from agents.narrator.types import (
    RESOLUTION,
    ClipFailed,
    ClipPending,
    ClipRequest,
    FinishedClip,
    GeneratedClip,
    StartedClip,
)
from agents.prompts import NARRATOR_PROMPT_VERSION, narrator_prompt
from agents.types import Usage

PENDING_STATES = frozenset({"queued", "in_progress"})
# How Google words a clip its safety filters withheld (the Interactions API has no field of
# its own for it: the reasons come as the failed step's or the interaction's error messages).
_FILTERED = re.compile(r"safety|filter|blocked|prohibited|responsible ai|\brai\b|policy|"
                       r"sensitive|celebrit|minor", re.IGNORECASE)
# google.rpc.Code of a failed operation -> the HTTP status the same fault answers with.
_RPC_TO_HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 400, 10: 409,
                13: 500, 14: 503, 16: 401}
# Transport failures that happen before a request leaves: nothing can have started.
_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


class GeminiClipMaker:
    """Starts clips on the route's video model and follows them by id."""

    prompt_version = NARRATOR_PROMPT_VERSION

    def __init__(self, settings: AgentSettings) -> None:
        self._settings = settings

    @property
    def model(self) -> str:
        """The model the next clip starts on: the route's first one not known to be retired."""
        return availability.active(self._settings.video, self._settings.model_recheck_s)

    def start(self, request: ClipRequest, workdir: Path) -> StartedClip:
        """Start one generation (never retried); ``AgentError`` on any failure."""
        settings = self._settings
        client = gemini.get_client(settings)
        content: list[dict[str, Any]] = [
            {"type": "text", "text": narrator_prompt(request.script, request.duration_seconds)},
            {"type": "image", "mime_type": request.image_mime,
             "data": base64.b64encode(request.image).decode()},
        ]

        def create(model: str) -> Any:
            try:
                return client.interactions.create(
                    model=model,
                    background=True,
                    input=[{"type": "user_input", "content": content}],
                    generation_config={"video_config": {"task": "image_to_video"}},
                    response_format={
                        "type": "video", "aspect_ratio": request.aspect_ratio,
                        "duration": f"{request.duration_seconds}s", "resolution": RESOLUTION,
                        "delivery": settings.video_delivery,
                    },
                    timeout=settings.video_timeout_ms / 1000,
                )
            except SDK_ERRORS as exc:
                raise _start_error(exc) from exc

        interaction, model = gemini.call_routed(settings, settings.video, create)
        if not interaction.id:
            raise AgentError("upstream_unconfirmed", "The AI provider started the video "
                             "without saying which one it is; it is not started again.",
                             retryable=False)
        return StartedClip(str(interaction.id), model)

    def poll(self, started: StartedClip) -> ClipPending | ClipFailed | FinishedClip:
        """Where the generation stands (one ``interactions.get``, safe to repeat)."""
        settings = self._settings
        client = gemini.get_client(settings)
        try:
            interaction = client.interactions.get(
                started.operation_id, timeout=settings.video_timeout_ms / 1000)
        except SDK_ERRORS as exc:
            error = from_sdk_error(exc)
            if error.upstream_status == 404:
                raise AgentError("upstream_bad_request", "The AI provider no longer knows this "
                                 "video generation.", retryable=False,
                                 upstream_status=404, detail=error.detail) from exc
            raise error from exc
        state = str(interaction.status or "")
        if state in PENDING_STATES:
            return ClipPending(state)
        video = _output_video(interaction) if state == "completed" else None
        if video is None or not (video.data or video.uri):
            return ClipFailed(operation_error(interaction))
        return FinishedClip(started.operation_id, started.model,
                            usage_of(interaction, started.model), data=video.data, uri=video.uri)

    def fetch(self, finished: FinishedClip, workdir: Path) -> GeneratedClip:
        """The finished clip in ``workdir`` (decoded or downloaded within the size cap), checked,
        with its poster."""
        path = workdir / "clip.mp4"
        if finished.data:
            _decode_inline(finished.data, path, self._settings.video_max_bytes)
        else:
            self._download(str(finished.uri), path)
        return finish_clip(path, finished.usage, max_bytes=self._settings.video_max_bytes)

    def _download(self, uri: str, path: Path) -> None:
        """Fetch a ``uri``-delivered clip with the SDK (Files API), within the size cap and
        a wall-clock limit."""
        settings = self._settings
        client = gemini.get_client(settings)
        timeout_ms = settings.video_download_timeout_ms
        config = types.DownloadFileConfig(http_options=types.HttpOptions(timeout=timeout_ms))
        with path.open("wb") as sink:
            capped = _CappedSink(sink, settings.video_max_bytes,
                                 time.monotonic() + timeout_ms / 1000)
            try:
                client.files.download(file=types.Video(uri=uri), destination=capped,
                                      config=config)
            except AgentError:
                raise
            except SDK_ERRORS as exc:
                raise from_sdk_error(exc) from exc
            except ValueError as exc:  # a URI the SDK cannot turn into a file name
                raise AgentError("invalid_model_output", "The AI provider returned a video "
                                 "address that cannot be downloaded.", retryable=False) from exc


class _CappedSink(io.RawIOBase):
    """A writable that refuses to grow past ``max_bytes`` or to go on past ``deadline``."""

    def __init__(self, sink: Any, max_bytes: int, deadline: float) -> None:
        super().__init__()
        self._sink, self._max, self._deadline = sink, max_bytes, deadline
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, chunk: Any) -> int:
        self.size += len(chunk)
        if self.size > self._max:
            raise too_large(self._max)
        if time.monotonic() > self._deadline:
            raise AgentError("upstream_timeout", "Downloading the generated video took too "
                             "long.", retryable=True)
        return int(self._sink.write(chunk))


def too_large(max_bytes: int) -> AgentError:
    return AgentError("media_rejected", f"The generated video is larger than the "
                      f"{max_bytes // (1024 * 1024)} MB limit (NARRATOR_CLIP_MAX_MB).",
                      retryable=False)


def _decode_inline(data: str | bytes, path: Path, max_bytes: int) -> None:
    # base64 is 4/3 of the bytes: the size is known before anything is decoded.
    if len(data) * 3 // 4 > max_bytes + 2:
        raise too_large(max_bytes)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AgentError("invalid_model_output", "The generated video is not valid base64.",
                         retryable=False) from exc
    if len(raw) > max_bytes:
        raise too_large(max_bytes)
    path.write_bytes(raw)


def _start_error(exc: BaseException) -> AgentError:
    """A failed start; one whose request may have reached Google is ``upstream_unconfirmed``."""
    error = from_sdk_error(exc)
    cause = exc.__cause__ or exc
    # No HTTP status: a timeout, a dropped connection or a malformed answer, each possibly
    # after Google had received the request.
    if error.upstream_status is None and type(cause).__name__ not in _NOT_SENT:
        return AgentError(
            "upstream_unconfirmed",
            "The AI provider did not confirm the start of the video generation. It may have "
            "started (and be billed); it is not started again, so it is never paid twice.",
            retryable=False, detail=type(cause).__name__)
    return error


def _output_video(interaction: Any) -> Any:
    """The video the interaction made (the SDK's ``output_video``, else the last video of a
    ``model_output`` step)."""
    if getattr(interaction, "output_video", None) is not None:
        return interaction.output_video
    for step in reversed(interaction.steps or []):
        for content in reversed(getattr(step, "content", None) or []):
            if getattr(content, "type", None) == "video":
                return content
    return None


def _error_texts(interaction: Any) -> list[str]:
    texts = [str(e.message) for e in interaction.errors or [] if getattr(e, "message", None)]
    for step in interaction.steps or []:
        error = getattr(step, "error", None)
        if error is not None and error.message:
            texts.append(str(error.message))
        for detail in (getattr(error, "details", None) or []) if error is not None else []:
            reason = detail.get("reason") if isinstance(detail, dict) else None
            if reason:
                texts.append(str(reason))
    return list(dict.fromkeys(texts))


def operation_error(interaction: Any) -> AgentError:
    """Why a finished interaction has no clip: ``blocked`` with the filter's reasons, else the
    operation's error mapped to the usual codes."""
    state = str(interaction.status or "unknown")
    texts = _error_texts(interaction)
    if any(_FILTERED.search(text) for text in texts):
        return AgentError("blocked", "The video was blocked by the AI provider's safety "
                          f"filters: {'; '.join(texts)}", retryable=False)
    rpc = next((step.error for step in interaction.steps or []
                if getattr(step, "error", None) is not None), None)
    if rpc is not None and rpc.code:
        status = _RPC_TO_HTTP.get(int(rpc.code), 500)
        body = {"message": rpc.message, "details": rpc.details or []}
        return from_status(status, state.upper(), rpc.message, body)
    if state == "completed":
        return AgentError("invalid_model_output", "The AI provider finished without a video.",
                          retryable=False)
    detail = "; ".join(texts) or state
    return AgentError("upstream_unavailable", f"The video generation ended {state} "
                      f"({detail}).", retryable=True, detail=detail[:300])


def usage_of(interaction: Any, model: str) -> Usage:
    """Tokens from the interaction's ``usage``: input, and output other than video (thoughts,
    text), which is billed by the second instead."""
    usage = interaction.usage
    if usage is None:
        return Usage(model=model)
    video_tokens = sum(m.tokens or 0 for m in usage.output_tokens_by_modality or []
                       if str(m.modality) == "video")
    other = max(0, (usage.total_output_tokens or 0) - video_tokens)
    return Usage(model=model, input_tokens=usage.total_input_tokens or 0,
                 output_tokens=other + (usage.total_thought_tokens or 0))
