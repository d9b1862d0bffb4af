"""The process-wide google-genai client and the one way agents call a Gemini model.

The SDK reads ``GOOGLE_GEMINI_BASE_URL`` itself (proxies, regional endpoints, test fakes) and
defaults to API version ``v1``. Its retries stay off: Celery owns retries and backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import TypeVar

import httpx2  # the SDK's HTTP client: its connection limits are set here
from google import genai
from google.genai import types

from agents.config import AgentSettings, ModelRoute
from agents.errors import SDK_ERRORS, AgentError, from_sdk_error
from agents.models import (
    ModelCheck,
    RouteStatus,
    availability,
    for_model,
    route_status,
    unavailable_error,
)
from agents.types import Usage

log = logging.getLogger(__name__)
T = TypeVar("T")

BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"

# Finish reasons that mean the answer was withheld by a content policy, not a transient fault.
_BLOCKING_FINISH_REASONS: frozenset[types.FinishReason] = frozenset(
    {
        types.FinishReason.SAFETY,
        types.FinishReason.BLOCKLIST,
        types.FinishReason.PROHIBITED_CONTENT,
        types.FinishReason.SPII,
        types.FinishReason.RECITATION,
        types.FinishReason.IMAGE_SAFETY,
        types.FinishReason.IMAGE_PROHIBITED_CONTENT,
        types.FinishReason.IMAGE_RECITATION,
    }
)

_ClientKey = tuple[str, str | None, int, int]

_clients_lock = threading.Lock()
_clients: dict[_ClientKey, genai.Client] = {}
_clients_pid: int | None = None


def _client_key(settings: AgentSettings, timeout_ms: int | None) -> _ClientKey:
    if not settings.gemini_api_key:
        raise AgentError(
            "upstream_auth", "No Gemini API key is configured.", retryable=False
        )
    # The env value is part of the key only so a changed endpoint gets a fresh client.
    base_url = settings.base_url or os.environ.get(BASE_URL_ENV) or None
    return (settings.gemini_api_key, base_url, timeout_ms or _default_timeout_ms(settings),
            settings.max_connections)


def _default_timeout_ms(settings: AgentSettings) -> int:
    # A client made without a timeout (none of the agents) still gets one, never "no limit".
    return max(
        settings.transcription_timeout_ms,
        settings.story_timeout_ms,
        settings.illustration_timeout_ms,
        settings.tts_timeout_ms,
        settings.video_timeout_ms,
    )


def get_client(settings: AgentSettings, timeout_ms: int | None = None) -> genai.Client:
    """The process's client for these settings and this request timeout (one per agent's
    timeout: a per-request timeout would make the SDK copy and merge its options on every
    call), created on first use (thread-safe)."""
    global _clients_pid
    key = _client_key(settings, timeout_ms)
    with _clients_lock:
        if _clients_pid != os.getpid():
            # Forked since the clients were made: their pooled sockets belong to the parent.
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(key)
        if client is None:
            api_key, _, timeout_ms, max_connections = key
            limits = httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            # One attempt per call. Without retry_options the models API already makes one, but
            # the Interactions API client retries 4 times by default (408, 409, 429, 5xx and
            # connection errors): a retried ``interactions.create`` could start (and bill) a
            # second video generation.
            http_options = types.HttpOptions(
                timeout=timeout_ms, base_url=settings.base_url, client_args={"limits": limits},
                retry_options=types.HttpRetryOptions(attempts=1),
            )
            client = genai.Client(vertexai=False, api_key=api_key, http_options=http_options)
            _clients[key] = client
        return client


def reset_clients() -> None:
    """Forget every client and what was learnt about models' availability; call after fork
    (e.g. Celery ``worker_process_init``) and in tests.

    Clients are dropped, not closed: after a fork their connections are shared with the parent.
    """
    global _clients_pid
    with _clients_lock:
        _clients.clear()
        _clients_pid = None
    availability.clear()


def generate(
    settings: AgentSettings,
    *,
    model: str,
    contents: types.ContentListUnionDict,
    config: types.GenerateContentConfig,
    timeout_ms: int,
) -> types.GenerateContentResponse:
    """Call ``generateContent`` once; every failure becomes an ``AgentError``."""
    client = get_client(settings, timeout_ms)
    try:
        response = client.models.generate_content(model=model, contents=contents, config=config)
    except SDK_ERRORS as exc:
        raise from_sdk_error(exc) from exc
    raise_if_blocked(response)
    return response


def generate_stream(
    settings: AgentSettings,
    *,
    model: str,
    contents: types.ContentListUnionDict,
    config: types.GenerateContentConfig,
    timeout_ms: int,
) -> Generator[types.GenerateContentResponse, None, None]:
    """Call ``streamGenerateContent`` and yield its chunks; failures become ``AgentError``.

    ``timeout_ms`` bounds each read and the whole stream. Closing the generator early closes
    the upstream response, which stops the generation.
    """
    client = get_client(settings, timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    chunks = client.models.generate_content_stream(model=model, contents=contents, config=config)
    try:
        for chunk in chunks:
            # A read timeout alone would let a trickling stream run forever.
            if time.monotonic() > deadline:
                raise AgentError(
                    "upstream_timeout",
                    "The AI provider did not finish its answer in time.",
                    retryable=True,
                )
            raise_if_blocked(chunk, final=False)
            yield chunk
    except SDK_ERRORS as exc:
        raise from_sdk_error(exc) from exc
    finally:
        # The SDK's stream is a generator (typed as an Iterator): closing it releases the socket.
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _candidates(settings: AgentSettings, route: ModelRoute) -> list[str]:
    models = availability.candidates(route, settings.model_recheck_s)
    if not models:
        # Every model of the route was found unavailable a moment ago: fail without a call.
        raise unavailable_error(route, route.chain)
    return models


def _unavailable(model: str, route: ModelRoute, error: AgentError) -> None:
    availability.mark_unavailable(model, error.detail)
    log.error("model unavailable", extra={
        "agent": route.agent, "model": model, "setting": route.setting,
        "upstream_status": error.upstream_status, "detail": error.detail,
    })


def call_routed(
    settings: AgentSettings, route: ModelRoute, call: Callable[[str], T]
) -> tuple[T, str]:
    """``call(model)`` on the route's models in order, moving on while one is retired or
    unknown (``model_unavailable``). Returns the answer and the model that gave it."""
    tried: list[str] = []
    for model in _candidates(settings, route):
        tried.append(model)
        try:
            answer = call(model)
        except AgentError as exc:
            if exc.code != "model_unavailable":
                raise
            _unavailable(model, route, exc)
            continue
        availability.mark_answered(model)
        return answer, model
    raise unavailable_error(route, tried)


def generate_routed(
    settings: AgentSettings,
    *,
    route: ModelRoute,
    contents: types.ContentListUnionDict,
    config: types.GenerateContentConfig,
    timeout_ms: int,
    temperature: float | None = None,
) -> tuple[types.GenerateContentResponse, str]:
    """Call the route's model, moving to its next model while one is retired or unknown.

    Returns the answer and the model that gave it. Each model gets the thinking field (and the
    temperature, if its family takes one) that suits it."""
    return call_routed(settings, route, lambda model: generate(
        settings, model=model, contents=contents, timeout_ms=timeout_ms,
        config=for_model(config, model, route, temperature=temperature),
    ))


def stream_routed(
    settings: AgentSettings,
    *,
    route: ModelRoute,
    contents: types.ContentListUnionDict,
    config: types.GenerateContentConfig,
    timeout_ms: int,
    temperature: float | None = None,
) -> Generator[tuple[str, types.GenerateContentResponse], None, None]:
    """``generate_stream`` on the route's first model that answers: yields (model, chunk).

    A model that is retired fails before its first chunk, so moving on never repeats text."""

    def opened(model: str) -> tuple[types.GenerateContentResponse | None,
                                    Generator[types.GenerateContentResponse, None, None]]:
        chunks = generate_stream(
            settings, model=model, contents=contents, timeout_ms=timeout_ms,
            config=for_model(config, model, route, temperature=temperature),
        )
        try:
            return next(chunks, None), chunks
        except BaseException:
            chunks.close()
            raise

    (first, chunks), model = call_routed(settings, route, opened)
    try:
        if first is not None:
            yield model, first
            for chunk in chunks:
                yield model, chunk
    finally:
        chunks.close()


def check_models(
    settings: AgentSettings, models: Iterable[str], *, timeout_ms: int = 10_000
) -> list[ModelCheck]:
    """Ask the API about each model once (``models.get``) and remember what it said.

    A 404 means not found; any other failure leaves the model's status unknown."""
    from google.genai import errors as genai_errors

    client = get_client(settings)
    checks: list[ModelCheck] = []
    for model in dict.fromkeys(models):
        now = time.time()
        try:
            info = client.models.get(model=model, config=types.GetModelConfig(
                http_options=types.HttpOptions(timeout=timeout_ms)))
        except genai_errors.APIError as exc:
            error = from_sdk_error(exc)
            found = False if error.code == "model_unavailable" else None
            check = ModelCheck(model, found, now, error.message)
        except SDK_ERRORS as exc:
            check = ModelCheck(model, None, now, from_sdk_error(exc).message)
        else:
            check = ModelCheck(
                model, True, now,
                input_token_limit=info.input_token_limit,
                output_token_limit=info.output_token_limit,
                supported_actions=tuple(info.supported_actions or ()),
            )
        availability.record(check)
        checks.append(check)
    return checks


def check_routes(
    settings: AgentSettings, *, max_age_s: float | None = None, timeout_ms: int = 10_000
) -> list[RouteStatus]:
    """Check every model of every agent's route (those not checked within ``max_age_s``; all
    when None) and say, per agent, which model answers."""
    now = time.time()
    stale = [
        model for route in settings.routes for model in route.chain
        if max_age_s is None or (last := availability.last(model)) is None
        or now - last.checked_at >= max_age_s
    ]
    if stale:
        check_models(settings, stale, timeout_ms=timeout_ms)
    return [route_status(route) for route in settings.routes]


def raise_if_blocked(response: types.GenerateContentResponse, *, final: bool = True) -> None:
    """Raise ``blocked`` for a blocked prompt or answer, ``invalid_model_output`` for none."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise AgentError(
            "blocked",
            "The request was blocked by the AI provider's safety filters "
            f"(reason: {_enum_name(feedback.block_reason)}).",
            retryable=False,
        )
    candidates = response.candidates or []
    if not candidates:
        if final:
            raise AgentError(
                "invalid_model_output", "The AI provider returned no answer.", retryable=True
            )
        return
    reason = candidates[0].finish_reason
    if reason in _BLOCKING_FINISH_REASONS:
        raise AgentError(
            "blocked",
            "The answer was blocked by the AI provider's safety filters "
            f"(reason: {_enum_name(reason)}).",
            retryable=False,
        )


def _enum_name(value: object) -> str:
    return str(getattr(value, "value", value))


def response_text(response: types.GenerateContentResponse) -> str:
    """The concatenated text parts of the first candidate, thoughts excluded."""
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    parts = (content.parts if content else None) or []
    return "".join(p.text for p in parts if p.text and not p.thought)


def usage_of(response: types.GenerateContentResponse, model: str) -> Usage:
    """Token usage from ``usageMetadata``; thinking tokens are billed as output."""
    meta = response.usage_metadata
    if meta is None:
        return Usage(model=model)
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return Usage(model=model, input_tokens=meta.prompt_token_count or 0, output_tokens=output)
