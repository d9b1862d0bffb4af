"""Settings of the AI agents, read from an environment mapping by the caller (never at import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer number of milliseconds") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return value


def _milliseconds(env: Mapping[str, str], name: str) -> int:
    """A duration in milliseconds that may be zero (off); unset is zero."""
    raw = env.get(name, "").strip()
    try:
        value = int(raw or "0")
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer number of milliseconds") from exc
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


@dataclass(frozen=True)
class AgentSettings:
    """Which Gemini models to call and how long each agent may wait for an answer.

    Timeouts are in milliseconds, the unit of google-genai's ``HttpOptions.timeout``.
    """

    # repr=False: the key must never reach logs or tracebacks.
    gemini_api_key: str | None = field(default=None, repr=False)
    model_flash: str = "gemini-2.5-flash"
    model_image: str = "gemini-2.5-flash-image"
    transcription_timeout_ms: int = 30_000
    story_timeout_ms: int = 60_000
    illustration_timeout_ms: int = 45_000
    # Concurrent HTTP connections to Gemini per process (and kept alive): at least the worker's
    # concurrency. The SDK's HTTP client otherwise allows 100 and keeps 20 alive, capping a
    # worker at 100 calls in flight and reconnecting for most of them.
    max_connections: int = 256
    # Only for tests that want an explicit endpoint; normally the SDK reads
    # GOOGLE_GEMINI_BASE_URL itself.
    base_url: str | None = None
    # The offline story builder waits this long before each chapter it streams, as a model
    # writing would, so a demo or a browser test can see chapters arrive before the job ends.
    offline_chapter_delay_ms: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentSettings:
        """Build settings from an environment mapping; empty values count as unset."""
        return cls(
            gemini_api_key=_text(env, "GEMINI_API_KEY"),
            model_flash=_text(env, "GEMINI_MODEL_FLASH") or cls.model_flash,
            model_image=_text(env, "GEMINI_MODEL_IMAGE") or cls.model_image,
            transcription_timeout_ms=_positive_int(
                env, "GEMINI_TIMEOUT_TRANSCRIPTION_MS", cls.transcription_timeout_ms
            ),
            story_timeout_ms=_positive_int(env, "GEMINI_TIMEOUT_STORY_MS", cls.story_timeout_ms),
            illustration_timeout_ms=_positive_int(
                env, "GEMINI_TIMEOUT_ILLUSTRATION_MS", cls.illustration_timeout_ms
            ),
            max_connections=_positive_int(env, "GEMINI_MAX_CONNECTIONS", cls.max_connections),
            offline_chapter_delay_ms=_milliseconds(env, "OFFLINE_CHAPTER_DELAY_MS"),
        )

    @property
    def has_api_key(self) -> bool:
        return bool(self.gemini_api_key)
