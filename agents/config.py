"""Settings of the AI agents, read from an environment mapping by the caller (never at import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The agents that call a Gemini model, as their settings are named: GEMINI_MODEL_<AGENT>,
# GEMINI_FALLBACK_MODELS_<AGENT>, GEMINI_THINKING_<AGENT>.
AGENT_NAMES: tuple[str, ...] = ("transcription", "story", "image", "tts", "video")

# Thinking settings: a level, ``lowest`` (the lowest level the model accepts) or ``default``
# (send nothing: the model's own default).
THINKING_CHOICES: tuple[str, ...] = ("lowest", "minimal", "low", "medium", "high", "default")
VIDEO_DELIVERIES: tuple[str, ...] = ("inline", "uri")

# Today's generally available models (Google's Gemini API docs, read 2026-12-01; see README,
# "Models"). Each agent's fallbacks are tried in order when its model answers "not found".
DEFAULT_MODELS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "transcription": ("gemini-3.5-flash-lite", ("gemini-3.8-flash",)),
    "story": ("gemini-3.8-flash", ("gemini-3.5-flash-lite",)),
    "image": ("gemini-nano-banana-2.1", ()),
    "tts": ("gemini-3.8-flash-tts", ("gemini-3.8-flash-lite-tts",)),
    # Video (narrator clips) goes through the Interactions API: Gemini Omni 1.2 Flash, the
    # SDK's Gemini API video default since google-genai 3.1.0; 1.1 Flash is GA since 2026-08-27.
    "video": ("gemini-omni-1.2-flash", ("gemini-omni-1.1-flash",)),
}
# Transcription thinks as little as the model allows; a story thinks a little, so its first
# chapter still streams within a second or so. Images and speech keep the model's default.
DEFAULT_THINKING: Mapping[str, str] = {
    "transcription": "lowest", "story": "low", "image": "default", "tts": "default",
    "video": "default",
}
# The text agents' former shared setting, still honoured when their own is unset.
LEGACY_TEXT_MODEL = "GEMINI_MODEL_FLASH"
_LEGACY_USERS = frozenset({"transcription", "story"})


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _positive_int(env: Mapping[str, str], name: str, default: int, unit: str) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer number of {unit}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_text(env, name) or default).lower()
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _model_list(value: str) -> tuple[str, ...]:
    names = [name.strip() for name in value.split(",")]
    return tuple(dict.fromkeys(name for name in names if name and name.lower() != "none"))


@dataclass(frozen=True)
class ModelRoute:
    """Which model an agent calls, what it falls back to, and how much it may think."""

    agent: str
    model: str
    fallbacks: tuple[str, ...] = ()
    thinking: str = "default"

    @property
    def chain(self) -> tuple[str, ...]:
        """The model, then its fallbacks, each once."""
        return tuple(dict.fromkeys((self.model, *self.fallbacks)))

    @property
    def setting(self) -> str:
        """The environment variable that names this agent's model (for error messages)."""
        return f"GEMINI_MODEL_{self.agent.upper()}"

    @property
    def fallback_setting(self) -> str:
        return f"GEMINI_FALLBACK_MODELS_{self.agent.upper()}"

    @classmethod
    def default(cls, agent: str) -> ModelRoute:
        model, fallbacks = DEFAULT_MODELS[agent]
        return cls(agent, model, fallbacks, DEFAULT_THINKING[agent])

    @classmethod
    def from_env(cls, env: Mapping[str, str], agent: str) -> ModelRoute:
        """``GEMINI_MODEL_<AGENT>`` (the text agents fall back on ``GEMINI_MODEL_FLASH``),
        ``GEMINI_FALLBACK_MODELS_<AGENT>`` (comma list; ``none`` for none) and
        ``GEMINI_THINKING_<AGENT>``; unset or empty values take the defaults."""
        default = cls.default(agent)
        key = agent.upper()
        model = _text(env, f"GEMINI_MODEL_{key}")
        if model is None and agent in _LEGACY_USERS:
            model = _text(env, LEGACY_TEXT_MODEL)
        fallbacks_text = _text(env, f"GEMINI_FALLBACK_MODELS_{key}")
        fallbacks = default.fallbacks if fallbacks_text is None else _model_list(fallbacks_text)
        thinking = (_text(env, f"GEMINI_THINKING_{key}") or default.thinking).lower()
        if thinking not in THINKING_CHOICES:
            raise ValueError(
                f"GEMINI_THINKING_{key} must be one of {', '.join(THINKING_CHOICES)}, "
                f"not {thinking!r}"
            )
        return cls(agent, model or default.model, fallbacks, thinking)


def _default_route(agent: str) -> ModelRoute:
    return ModelRoute.default(agent)


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
    transcription: ModelRoute = field(default_factory=lambda: _default_route("transcription"))
    story: ModelRoute = field(default_factory=lambda: _default_route("story"))
    image: ModelRoute = field(default_factory=lambda: _default_route("image"))
    tts: ModelRoute = field(default_factory=lambda: _default_route("tts"))
    video: ModelRoute = field(default_factory=lambda: _default_route("video"))
    transcription_timeout_ms: int = 30_000
    story_timeout_ms: int = 60_000
    illustration_timeout_ms: int = 45_000
    tts_timeout_ms: int = 60_000
    # One request of a long-running video operation (start it, ask how it is doing): the
    # generation itself takes minutes and is waited for by polling, never by a request.
    video_timeout_ms: int = 30_000
    # A generated clip is downloaded whole (at most this long, at most this large).
    video_download_timeout_ms: int = 120_000
    video_max_bytes: int = 100 * 1024 * 1024
    # How the API hands the clip over: ``inline`` (base64 in the finished interaction) or
    # ``uri`` (a file the SDK downloads).
    video_delivery: str = "inline"
    # How long a process remembers that a model answered "not found" before trying it again.
    model_recheck_s: int = 600
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
        d = cls()
        return cls(
            gemini_api_key=_text(env, "GEMINI_API_KEY"),
            transcription=ModelRoute.from_env(env, "transcription"),
            story=ModelRoute.from_env(env, "story"),
            image=ModelRoute.from_env(env, "image"),
            tts=ModelRoute.from_env(env, "tts"),
            video=ModelRoute.from_env(env, "video"),
            transcription_timeout_ms=_positive_int(
                env, "GEMINI_TIMEOUT_TRANSCRIPTION_MS", d.transcription_timeout_ms, "ms"
            ),
            story_timeout_ms=_positive_int(
                env, "GEMINI_TIMEOUT_STORY_MS", d.story_timeout_ms, "ms"),
            illustration_timeout_ms=_positive_int(
                env, "GEMINI_TIMEOUT_ILLUSTRATION_MS", d.illustration_timeout_ms, "ms"
            ),
            tts_timeout_ms=_positive_int(env, "GEMINI_TIMEOUT_TTS_MS", d.tts_timeout_ms, "ms"),
            video_timeout_ms=_positive_int(
                env, "GEMINI_TIMEOUT_VIDEO_MS", d.video_timeout_ms, "ms"),
            video_download_timeout_ms=_positive_int(
                env, "GEMINI_VIDEO_DOWNLOAD_TIMEOUT_MS", d.video_download_timeout_ms, "ms"),
            video_max_bytes=_positive_int(
                env, "NARRATOR_CLIP_MAX_MB", d.video_max_bytes // (1024 * 1024), "MB",
            ) * 1024 * 1024,
            video_delivery=_choice(env, "GEMINI_VIDEO_DELIVERY", d.video_delivery,
                                   VIDEO_DELIVERIES),
            model_recheck_s=_positive_int(
                env, "GEMINI_MODEL_RECHECK_SECONDS", d.model_recheck_s, "seconds"),
            max_connections=_positive_int(
                env, "GEMINI_MAX_CONNECTIONS", d.max_connections, "connections"),
            offline_chapter_delay_ms=_milliseconds(env, "OFFLINE_CHAPTER_DELAY_MS"),
        )

    @property
    def has_api_key(self) -> bool:
        return bool(self.gemini_api_key)

    @property
    def routes(self) -> tuple[ModelRoute, ...]:
        """Every agent's model route, in ``AGENT_NAMES`` order."""
        return tuple(getattr(self, agent) for agent in AGENT_NAMES)
