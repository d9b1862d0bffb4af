"""The one exception type of the agents, and the mapping from SDK/transport failures to it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
from google.genai import _interactions_errors as interactions_errors
from google.genai import errors as genai_errors

# google-genai sends requests with `httpx2` (a fork of httpx under another import name) and
# falls back to `httpx`; only httpx2 is installed here. Accept whichever is importable so
# transport errors map the same way under either.
_TIMEOUT_TYPES: list[type[BaseException]] = [TimeoutError]
_TRANSPORT_TYPES: list[type[BaseException]] = [ConnectionError]
try:
    import httpx2

    _TIMEOUT_TYPES.append(httpx2.TimeoutException)
    _TRANSPORT_TYPES.append(httpx2.TransportError)
except ImportError:  # pragma: no cover - depends on the installed SDK extras
    pass
try:
    import httpx  # type: ignore[import-not-found, unused-ignore]

    _TIMEOUT_TYPES.append(httpx.TimeoutException)
    _TRANSPORT_TYPES.append(httpx.TransportError)
except ImportError:
    pass
TIMEOUT_ERRORS: tuple[type[BaseException], ...] = tuple(_TIMEOUT_TYPES)
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = tuple(_TRANSPORT_TYPES)
# A 200 whose body is not the JSON the SDK expects: json.JSONDecodeError (unary calls),
# UnknownApiResponseError (streams) or a pydantic ValidationError (wrong shape).
MALFORMED_RESPONSE_ERRORS: tuple[type[BaseException], ...] = (
    json.JSONDecodeError,
    genai_errors.UnknownApiResponseError,
    pydantic.ValidationError,
)
# Everything a google-genai call may raise that is the upstream's fault, not a bug of ours.
# The Interactions API (``client.interactions``) is a generated client of its own that raises
# its own hierarchy (``google.genai._interactions_errors``: status, connection, timeout and
# response-validation errors), not ``google.genai.errors``.
SDK_ERRORS: tuple[type[BaseException], ...] = (
    genai_errors.APIError,
    interactions_errors.APIError,
    *TIMEOUT_ERRORS,
    *TRANSPORT_ERRORS,
    *MALFORMED_RESPONSE_ERRORS,
)

ERROR_CODES: tuple[str, ...] = (
    "upstream_rate_limited",
    "upstream_quota_exhausted",
    "upstream_unavailable",
    "upstream_timeout",
    "upstream_bad_request",
    "upstream_auth",
    "blocked",
    "invalid_model_output",
    "invalid_input",
    "model_unavailable",
    "upstream_unconfirmed",
)

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_DETAIL_LIMIT = 300
# How Gemini says a model is gone: 404 NOT_FOUND "models/X is not found for API version v1beta,
# or is not supported for generateContent", or a 400 that the model is not supported for the
# method called.
_NOT_SUPPORTED = re.compile(r"not (?:found|supported) for (?:API version|\w*generate\w*)", re.I)


class AgentError(Exception):
    """An AI call failed; ``code`` and ``message`` are safe to show to clients.

    ``retryable`` says whether trying again later may succeed; ``retry_after`` (seconds) is the
    minimum wait the upstream asked for. ``detail`` is a short upstream hint for logs only.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.detail = detail

    def __repr__(self) -> str:
        return (
            f"AgentError(code={self.code!r}, message={self.message!r}, "
            f"retryable={self.retryable!r}, retry_after={self.retry_after!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions.
        return (_rebuild_agent_error, (self.code, self.message, self._state()))

    def _state(self) -> dict[str, Any]:
        return {
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "upstream_status": self.upstream_status,
            "detail": self.detail,
        }

    def to_dict(self) -> dict[str, object]:
        """The client-facing shape (``code``, ``message``, ``retryable``)."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


def _rebuild_agent_error(code: str, message: str, state: dict[str, Any]) -> AgentError:
    return AgentError(code, message, **state)


def parse_duration(value: object) -> float | None:
    """Seconds from a protobuf JSON Duration such as ``"7s"`` or ``"0.5s"``."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    return float(match.group(1)) if match else None


def _error_body(body: object) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        inner = body.get("error")
        return inner if isinstance(inner, Mapping) else body
    return {}


def _detail_items(body: Mapping[str, Any], type_url: str) -> list[Mapping[str, Any]]:
    details = body.get("details")
    if not isinstance(details, Sequence) or isinstance(details, str):
        return []
    return [d for d in details if isinstance(d, Mapping) and d.get("@type") == type_url]


def _retry_delay(body: Mapping[str, Any]) -> float | None:
    for item in _detail_items(body, _RETRY_INFO):
        delay = parse_duration(item.get("retryDelay"))
        if delay is not None:
            return delay
    return None


def _is_daily_quota(body: Mapping[str, Any]) -> bool:
    for item in _detail_items(body, _QUOTA_FAILURE):
        violations = item.get("violations")
        if not isinstance(violations, Sequence):
            continue
        for violation in violations:
            if isinstance(violation, Mapping) and "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


def _is_bad_key(body: Mapping[str, Any]) -> bool:
    # Gemini answers an invalid key with 400 INVALID_ARGUMENT + ErrorInfo API_KEY_INVALID.
    return any(
        str(item.get("reason", "")).startswith("API_KEY")
        for item in _detail_items(body, _ERROR_INFO)
    )


def _short(text: object) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "..."


def _from_api_error(exc: genai_errors.APIError) -> AgentError:
    status = int(exc.code) if isinstance(exc.code, int) else 0
    body = _error_body(exc.details)
    return from_status(status, str(exc.status or body.get("status") or ""), exc.message, body)


def _from_interactions_error(exc: interactions_errors.APIError) -> AgentError:
    if isinstance(exc, interactions_errors.APITimeoutError):
        return AgentError("upstream_timeout", "The AI provider did not answer in time.",
                          retryable=True, detail=type(exc.__cause__ or exc).__name__)
    if isinstance(exc, interactions_errors.APIConnectionError):
        return AgentError("upstream_unavailable", "Could not reach the AI provider.",
                          retryable=True, detail=type(exc.__cause__ or exc).__name__)
    if isinstance(exc, interactions_errors.APIResponseValidationError):
        return AgentError("upstream_unavailable", "The AI provider sent a malformed response.",
                          retryable=True, detail=type(exc).__name__)
    body = _error_body(exc.body)
    message = body.get("message") if isinstance(body.get("message"), str) else exc.message
    return from_status(int(exc.status_code or 0), str(body.get("status") or ""), message, body)


def from_status(status: int, reason: str, message: str | None,
                body: Mapping[str, Any]) -> AgentError:
    """The ``AgentError`` for an upstream error status (HTTP code, Google's status name, its
    message and its JSON error body with ``details``)."""
    detail = _short(message)
    common: dict[str, Any] = {"upstream_status": status, "detail": detail}
    label = f"HTTP {status} {reason}".strip()

    if status == 429:
        retry_after = _retry_delay(body)
        if _is_daily_quota(body):
            return AgentError(
                "upstream_quota_exhausted",
                f"The AI provider's daily quota is exhausted ({label}).",
                retryable=False,
                retry_after=retry_after,
                **common,
            )
        return AgentError(
            "upstream_rate_limited",
            f"The AI provider is rate limiting requests ({label}).",
            retryable=True,
            retry_after=retry_after,
            **common,
        )
    if status == 408:
        return AgentError(
            "upstream_timeout",
            f"The AI provider timed out ({label}).",
            retryable=True,
            **common,
        )
    if status in (401, 403) or (status == 400 and _is_bad_key(body)):
        return AgentError(
            "upstream_auth",
            f"The AI provider rejected our credentials ({label}).",
            retryable=False,
            **common,
        )
    if status == 404 or (status == 400 and _NOT_SUPPORTED.search(str(message or ""))):
        # Retired or unknown: no retry helps. ``agents.gemini`` names the model and setting.
        return AgentError(
            "model_unavailable",
            f"The AI model is not available ({label}).",
            retryable=False,
            **common,
        )
    if 400 <= status < 500:
        return AgentError(
            "upstream_bad_request",
            f"The AI provider rejected the request ({label}).",
            retryable=False,
            **common,
        )
    return AgentError(
        "upstream_unavailable",
        f"The AI provider is unavailable ({label}).",
        retryable=True,
        retry_after=_retry_delay(body),
        **common,
    )


def from_sdk_error(exc: BaseException) -> AgentError:
    """Map an exception raised while calling google-genai to an ``AgentError``."""
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        return _from_api_error(exc)
    if isinstance(exc, interactions_errors.APIError):
        return _from_interactions_error(exc)
    if isinstance(exc, TIMEOUT_ERRORS):
        return AgentError(
            "upstream_timeout",
            "The AI provider did not answer in time.",
            retryable=True,
            detail=type(exc).__name__,
        )
    if isinstance(exc, TRANSPORT_ERRORS):
        return AgentError(
            "upstream_unavailable",
            "Could not reach the AI provider.",
            retryable=True,
            detail=type(exc).__name__,
        )
    if isinstance(exc, MALFORMED_RESPONSE_ERRORS):
        return AgentError(
            "upstream_unavailable",
            "The AI provider sent a malformed response.",
            retryable=True,
            detail=type(exc).__name__,
        )
    return AgentError(
        "upstream_unavailable",
        "Unexpected failure while calling the AI provider.",
        retryable=True,
        detail=type(exc).__name__,
    )
