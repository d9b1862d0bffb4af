"""Application settings, read from the environment by the app and worker factories."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agents.config import AgentSettings
from agents.film.settings import FilmSettings as RenderSettings
from models.db import normalize_database_url

DEFAULT_VAR_DIR = Path("var")
# Threads per worker process; I/O-bound jobs spend their time waiting on Gemini.
DEFAULT_CONCURRENCY = 16

# USD per 1M tokens (input, output) per model: Google's list prices for the paid Gemini API tier
# (ai.google.dev/gemini-api/docs/pricing, read 2026-12-01). They change: keep them current.
# Used for the cost metric and `lifetales usage`; a model missing here (the offline provider's)
# has no estimated cost. How Gemini bills what our usage records:
# - thinking tokens are output tokens (agents.gemini.usage_of adds them to the output count);
# - an illustration asks for IMAGE output only, so its output tokens are image tokens, billed
#   at the image rate (1,120 tokens per 1K image: $0.0336 at $30/M);
# - a narration's output tokens are audio tokens, at the TTS models' audio rate.
# The 3.8 Flash and 3.8 TTS prices are launch prices "through December 31, 2026"; Google
# doubles them on January 1, 2027 (3.8 Flash: $1.50/$7.50, Flash TTS: $1.00/$18.00).
MODEL_PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "gemini-3.8-flash": (0.75, 3.75),
    "gemini-3.5-flash-lite": (0.30, 2.50),
    "gemini-nano-banana-2.1": (1.50, 30.00),
    "gemini-3.8-flash-tts": (0.50, 9.00),
    "gemini-3.8-flash-lite-tts": (0.50, 6.00),
    # Video models: input (the photo, the prompt) and any text or thinking they output; the
    # video itself is billed by the second (MODEL_PRICES_USD_PER_VIDEO_SECOND).
    "gemini-omni-1.2-flash": (1.50, 9.00),
    "gemini-omni-1.1-flash": (1.50, 9.00),
    # Retired models, still priced so jobs they ran keep their cost in `lifetales usage`.
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-image": (0.30, 30.00),
}


# USD per second of generated video, at the 720p narrator clips are made at. Gemini Omni bills
# video output as tokens (5,792 a second of 720p) at a video rate, which comes to a price per
# second: Omni 1.2 Flash $0.07/s (1080p $0.105, 4K $0.21, 360p $0.023), Omni 1.1 Flash
# $0.10/s (1080p $0.15, 4K $0.30, 360p $0.03), sound included. Read 2026-12-01 (Google's
# pricing page as quoted by resellers' price lists); keep them current.
MODEL_PRICES_USD_PER_VIDEO_SECOND: dict[str, float] = {
    "gemini-omni-1.2-flash": 0.07,
    "gemini-omni-1.1-flash": 0.10,
    # Shut down 2026-09-30; priced so its jobs keep their cost.
    "gemini-omni-flash-preview": 0.10,
}


def estimated_cost_usd(
    model: str, input_tokens: int, output_tokens: int, video_seconds: float = 0.0
) -> float | None:
    """Estimated cost of these tokens (and seconds of video) at list price; None for a model
    without a price."""
    prices = MODEL_PRICES_USD_PER_MTOK.get(model)
    per_second = MODEL_PRICES_USD_PER_VIDEO_SECOND.get(model)
    if prices is None and per_second is None:
        return None
    tokens = (input_tokens * prices[0] + output_tokens * prices[1]) / 1_000_000 if prices else 0.0
    return tokens + video_seconds * (per_second or 0.0)


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name, "")
    return value if value.strip() else default


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting: true/false, yes/no, on/off, 1/0; empty or unset means the default."""
    value = (_get(env, name) or "").strip().lower()
    if not value:
        return default
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise RuntimeError(f"{name} must be true or false, not {value!r}")


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    """A flask-limiter limit string ("10/minute", "3 per hour; 20 per day"), checked now rather
    than on the first request."""
    from limits import parse_many

    value = (_get(env, name) or default).strip()
    try:
        parse_many(value)
    except ValueError:
        raise RuntimeError(
            f"{name} must be a rate limit such as '10/minute' or '3 per hour', not {value!r}"
        ) from None
    return value


@dataclass(frozen=True)
class RateLimitSettings:
    """Request budgets of the API (see api/ratelimit.py); limit strings in flask-limiter syntax."""

    enabled: bool = True
    per_user: str = "1000/hour"  # every API call of a user (by IP when anonymous)
    per_ip: str = "10000/hour"  # a ceiling over all traffic from one address
    auth: str = "20/minute"  # per IP on register, login and password change
    polling: str = "600/minute"  # per user on GET /jobs/{id} and its event stream
    transcription: str = "10/minute"  # per user
    story: str = "3/hour"  # per user
    illustration: str = "30/hour"  # per user
    film: str = "5/hour"  # per user
    narration: str = "60/hour"  # per user: POST /narrations
    narrator_clip: str = "5/day"  # per user

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RateLimitSettings:
        d = cls()
        return cls(
            enabled=env_bool(env, "RATE_LIMITS_ENABLED", True),
            per_user=_rate_limit(env, "RATE_LIMIT_PER_USER", d.per_user),
            per_ip=_rate_limit(env, "RATE_LIMIT_PER_IP", d.per_ip),
            auth=_rate_limit(env, "RATE_LIMIT_AUTH", d.auth),
            polling=_rate_limit(env, "RATE_LIMIT_POLLING", d.polling),
            transcription=_rate_limit(env, "RATE_LIMIT_TRANSCRIPTIONS", d.transcription),
            story=_rate_limit(env, "RATE_LIMIT_STORIES", d.story),
            illustration=_rate_limit(env, "RATE_LIMIT_ILLUSTRATIONS", d.illustration),
            film=_rate_limit(env, "RATE_LIMIT_FILMS", d.film),
            narration=_rate_limit(env, "RATE_LIMIT_NARRATIONS", d.narration),
            narrator_clip=_rate_limit(env, "RATE_LIMIT_NARRATOR_CLIPS", d.narrator_clip),
        )


@dataclass(frozen=True)
class HttpSettings:
    """How the API meets browsers and proxies: CORS, trusted proxy hops, HTTPS."""

    cors_origins: tuple[str, ...] = ()
    trusted_proxy_hops: int = 0  # 0: X-Forwarded-* headers are ignored
    force_https: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpSettings:
        return cls(
            cors_origins=_cors_origins(_get(env, "CORS_ORIGINS") or ""),
            trusted_proxy_hops=_proxy_hops(_get(env, "TRUST_PROXY") or ""),
            force_https=env_bool(env, "FORCE_HTTPS", False),
        )


def _cors_origins(value: str) -> tuple[str, ...]:
    origins = []
    for raw in value.split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        scheme, sep, host = origin.partition("://")
        if origin == "*" or not sep or scheme not in ("http", "https") or not host \
                or "/" in host or "*" in host:
            raise RuntimeError(
                f"CORS_ORIGINS lists origins such as https://app.example.com, never a wildcard or "
                f"a path: {raw.strip()!r}"
            )
        origins.append(origin.lower())
    return tuple(origins)


def _proxy_hops(value: str) -> int:
    """TRUST_PROXY: true means one proxy (the usual load balancer); a number says how many."""
    value = value.strip().lower()
    if not value or value in _FALSE:
        return 0
    if value in _TRUE:
        return 1
    if value.isdigit():
        return int(value)
    raise RuntimeError(f"TRUST_PROXY must be true, false or a number of proxies, not {value!r}")


@dataclass(frozen=True)
class ObservabilitySettings:
    """Logs, metrics and error tracking; workers read these before any job context exists."""

    log_level: str = "INFO"
    sentry_dsn: str | None = field(default=None, repr=False)
    # Unset: /metrics answers loopback callers only.
    metrics_token: str | None = field(default=None, repr=False)
    worker_metrics_port: int = 9100  # 0: no exporter
    worker_metrics_address: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ObservabilitySettings:
        level = (_get(env, "LOG_LEVEL") or "INFO").strip().upper()
        if level not in LOG_LEVELS:
            raise RuntimeError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
        return cls(
            log_level=level,
            sentry_dsn=_get(env, "SENTRY_DSN"),
            metrics_token=_get(env, "METRICS_TOKEN"),
            worker_metrics_port=env_int(env, "WORKER_METRICS_PORT", 9100),
            worker_metrics_address=_get(env, "WORKER_METRICS_ADDRESS") or "127.0.0.1",
        )


@dataclass(frozen=True)
class BatchSettings:
    """Batch regeneration (workers/batch.py): how it fans out and what it leaves to users."""

    # Share of each model's rate limit that batch calls may never take (interactive traffic's).
    interactive_reserved_share: float = 0.5
    # Unfinished children a batch keeps at most: the next chunk waits for room below it.
    window: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BatchSettings:
        share_text = (_get(env, "INTERACTIVE_RESERVED_SHARE") or "0.5").strip()
        try:
            share = float(share_text)
        except ValueError:
            share = -1.0
        if not 0.0 <= share < 1.0:
            raise RuntimeError(
                f"INTERACTIVE_RESERVED_SHARE must be a number from 0 up to (not including) 1, "
                f"not {share_text!r}")
        window = env_int(env, "BATCH_WINDOW", cls.window)
        if window <= 0:
            raise RuntimeError("BATCH_WINDOW must be a positive whole number")
        return cls(interactive_reserved_share=share, window=window)


@dataclass(frozen=True)
class WebhookSettings:
    """Job webhooks (workers/webhooks.py): where they may go, how they are sent and retried."""

    allow_http: bool = False  # plain http:// targets, for local development only
    allow_private: bool = False  # loopback, private and link-local targets (SSRF guard off)
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    max_attempts: int = 8  # first try + retries of one delivery
    retry_base_s: float = 5.0  # backoff: base * 2^(attempt-1), jittered, capped
    retry_max_s: float = 1800.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        d = cls()
        settings = cls(
            allow_http=env_bool(env, "WEBHOOK_ALLOW_HTTP", False),
            allow_private=env_bool(env, "WEBHOOK_ALLOW_PRIVATE", False),
            connect_timeout_s=_seconds(env, "WEBHOOK_CONNECT_TIMEOUT_SECONDS", d.connect_timeout_s),
            read_timeout_s=_seconds(env, "WEBHOOK_READ_TIMEOUT_SECONDS", d.read_timeout_s),
            max_attempts=env_int(env, "WEBHOOK_MAX_ATTEMPTS", d.max_attempts),
            retry_base_s=_seconds(env, "WEBHOOK_RETRY_BASE_SECONDS", d.retry_base_s),
            retry_max_s=_seconds(env, "WEBHOOK_RETRY_MAX_SECONDS", d.retry_max_s),
        )
        if settings.max_attempts < 1:
            raise RuntimeError("WEBHOOK_MAX_ATTEMPTS must be at least 1")
        return settings


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive duration in seconds (fractions allowed); empty or unset means the default."""
    value = _get(env, name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise RuntimeError(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


@dataclass(frozen=True)
class FilmSettings:
    """Films: the renderer's own settings (``agents.film.FilmSettings``: ffmpeg, music library,
    limits) and how many films a render worker process renders at once."""

    render: RenderSettings = field(default_factory=RenderSettings)
    render_concurrency: int = 1  # `lifetales run`'s render worker; the Procfile's runs 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FilmSettings:
        concurrency = env_int(env, "RENDER_CONCURRENCY", cls.render_concurrency)
        if concurrency < 1:
            raise RuntimeError("RENDER_CONCURRENCY must be a positive whole number")
        return cls(render=RenderSettings.from_env(env), render_concurrency=concurrency)


@dataclass(frozen=True)
class NarratorSettings:
    """Narrator clips (workers/tasks/narrator_clip.py): how their video generation is polled.

    A job looks at its operation first ``poll_min_s`` after starting it, then every
    ``poll_growth`` of the time it has waited so far, between ``poll_min_s`` and
    ``poll_max_s``, with one look falling on ``estimate_s``: a clip done in about the estimate
    is seen at once; one that takes longer is seen at most ``poll_growth`` of its time late."""

    poll_min_s: float = 5.0
    poll_max_s: float = 30.0
    poll_growth: float = 0.2
    estimate_s: int = 60  # what a generation usually takes (the progress estimate)
    max_wait_s: int = 900  # then the job gives up on the operation (``upstream_timeout``)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NarratorSettings:
        d = cls()
        settings = cls(
            poll_min_s=_seconds(env, "NARRATOR_POLL_MIN_SECONDS", d.poll_min_s),
            poll_max_s=_seconds(env, "NARRATOR_POLL_MAX_SECONDS", d.poll_max_s),
            poll_growth=_seconds(env, "NARRATOR_POLL_GROWTH", d.poll_growth),
            estimate_s=env_int(env, "NARRATOR_ESTIMATE_SECONDS", d.estimate_s),
            max_wait_s=env_int(env, "NARRATOR_MAX_WAIT_SECONDS", d.max_wait_s),
        )
        if settings.poll_max_s < settings.poll_min_s or min(settings.estimate_s,
                                                             settings.max_wait_s) < 1:
            raise RuntimeError("NARRATOR_POLL_MAX_SECONDS must be at least "
                               "NARRATOR_POLL_MIN_SECONDS, and NARRATOR_ESTIMATE_SECONDS and "
                               "NARRATOR_MAX_WAIT_SECONDS positive")
        return settings


DAY_S = 24 * 3600


@dataclass(frozen=True)
class RetentionSettings:
    """How long finished jobs and raw audio are kept (workers/retention.py); 0 keeps forever."""

    job_ttl_s: int = 30 * DAY_S  # then a job keeps only its status, timestamps, error, usage
    audio_ttl_s: int = 7 * DAY_S  # then stored audio is deleted; its transcription stays
    interval_s: int = 3600  # how often beat runs the pruning
    # Stored files younger than this are never swept as orphans: an upload stores its file
    # just before its row commits.
    orphan_grace_s: int = 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetentionSettings:
        d = cls()
        return cls(
            job_ttl_s=_retention(env, "JOB_RETENTION_SECONDS", "JOB_RETENTION_DAYS",
                                 d.job_ttl_s),
            audio_ttl_s=_retention(env, "AUDIO_RETENTION_SECONDS", "AUDIO_RETENTION_DAYS",
                                   d.audio_ttl_s),
            interval_s=max(1, env_int(env, "RETENTION_INTERVAL_SECONDS", d.interval_s)),
            orphan_grace_s=max(0, env_int(env, "MEDIA_ORPHAN_GRACE_SECONDS", d.orphan_grace_s)),
        )


def _retention(env: Mapping[str, str], seconds_name: str, days_name: str, default_s: int) -> int:
    """A retention period: in seconds if set, else in days; 0 means keep forever."""
    seconds = env_int(env, seconds_name, -1)
    if seconds < 0:
        days = env_int(env, days_name, -1)
        seconds = default_s if days < 0 else days * DAY_S
    return seconds


@dataclass(frozen=True)
class PollSettings:
    """The poll fast path: job documents kept in Redis, and the per-process cache of users'
    token versions that lets a poll skip the users table (workers/job_mirror.py, api/auth.py)."""

    # An entry lives this long after its last write (each transition writes it again). The
    # life bounds how long a process killed between a commit and its write can leave an
    # older document behind, and the memory finished jobs hold in Redis.
    document_ttl_s: int = 300
    # How long a process trusts a user's token version: a password change made through another
    # API process revokes older tokens on this path after at most this long.
    token_version_cache_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PollSettings:
        return cls(
            document_ttl_s=max(1, env_int(env, "JOB_DOCUMENT_TTL_SECONDS", 300)),
            token_version_cache_s=max(0, env_int(env, "TOKEN_VERSION_CACHE_SECONDS", 5)),
        )


@dataclass(frozen=True)
class Settings:
    """Everything the API and the workers need to know about their environment."""

    database_url: str
    broker_url: str
    redis_url: str | None
    secret_key: str = field(repr=False)
    media_dir: Path
    public_base_url: str
    port: int
    cloudinary_url: str | None = field(repr=False, default=None)
    access_token_ttl_s: int = 3600
    queued_resend_after_s: int = 30
    heartbeat_timeout_s: int = 30
    max_attempts: int = 4
    max_attempts_by_kind: dict[str, int] = field(default_factory=dict)
    cache_ttl_s: int = 7 * 24 * 3600
    agents: AgentSettings = field(default_factory=lambda: AgentSettings(gemini_api_key=None))
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    film: FilmSettings = field(default_factory=FilmSettings)
    narrator: NarratorSettings = field(default_factory=NarratorSettings)
    poll: PollSettings = field(default_factory=PollSettings)

    def attempts_for(self, kind: str) -> int:
        """Attempts a job of this kind gets (first try + retries); configurable per kind."""
        return self.max_attempts_by_kind.get(kind, self.max_attempts)

    @property
    def embedded(self) -> bool:
        """True when running on the all-local default (SQLite database and broker)."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        var_dir = var_dir_from_env(env)
        embedded_db = f"sqlite:///{(var_dir / 'lifetales.db').resolve()}"
        database_url = _get(env, "DATABASE_URL") or embedded_db
        database_url = normalize_database_url(database_url)
        redis_url = _get(env, "REDIS_URL")
        broker_url = broker_url_from_env(env)
        port = env_int(env, "PORT", 3000)
        secret_key = _get(env, "SECRET_KEY") or _get(env, "JWT_SECRET")
        if not secret_key:
            if not database_url.startswith("sqlite"):
                raise RuntimeError("SECRET_KEY must be set unless running on the embedded SQLite")
            secret_key = _embedded_secret(var_dir)
        return cls(
            database_url=database_url,
            broker_url=broker_url,
            redis_url=redis_url,
            secret_key=secret_key,
            media_dir=Path(_get(env, "MEDIA_DIR") or var_dir / "media").resolve(),
            public_base_url=(_get(env, "PUBLIC_BASE_URL") or f"http://localhost:{port}").rstrip(
                "/"
            ),
            port=port,
            cloudinary_url=_get(env, "CLOUDINARY_URL"),
            access_token_ttl_s=env_int(env, "ACCESS_TOKEN_TTL_SECONDS", 3600),
            queued_resend_after_s=env_int(env, "JOB_QUEUED_RESEND_AFTER_SECONDS", 30),
            heartbeat_timeout_s=env_int(env, "JOB_HEARTBEAT_TIMEOUT_SECONDS", 30),
            max_attempts=env_int(env, "JOB_MAX_ATTEMPTS", 4),
            max_attempts_by_kind=_attempts_by_kind(env),
            cache_ttl_s=env_int(env, "CACHE_TTL_SECONDS", 7 * 24 * 3600),
            agents=AgentSettings.from_env(env),
            observability=ObservabilitySettings.from_env(env),
            rate_limits=RateLimitSettings.from_env(env),
            http=HttpSettings.from_env(env),
            retention=RetentionSettings.from_env(env),
            webhooks=WebhookSettings.from_env(env),
            batch=BatchSettings.from_env(env),
            film=FilmSettings.from_env(env),
            narrator=NarratorSettings.from_env(env),
            poll=PollSettings.from_env(env),
        )


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """An integer setting; empty or unset means the default, anything else must be a number."""
    value = _get(env, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"{name} must be a whole number, not {value!r}") from None


def _attempts_by_kind(env: Mapping[str, str]) -> dict[str, int]:
    """JOB_MAX_ATTEMPTS_<KIND> overrides, e.g. fewer retries for interactive transcriptions."""
    overrides = {}
    for kind in ("transcription", "story", "illustration", "narration", "film", "render",
                 "narrator_clip"):
        attempts = env_int(env, f"JOB_MAX_ATTEMPTS_{kind.upper()}", 0)
        if attempts > 0:
            overrides[kind] = attempts
    return overrides


def var_dir_from_env(env: Mapping[str, str]) -> Path:
    return Path(_get(env, "LIFETALES_VAR_DIR") or DEFAULT_VAR_DIR)


def broker_url_from_env(env: Mapping[str, str]) -> str:
    """CELERY_BROKER_URL, else REDIS_URL, else kombu's SQLAlchemy transport on a local SQLite."""
    embedded = f"sqla+sqlite:///{(var_dir_from_env(env) / 'celery-broker.db').resolve()}"
    return _get(env, "CELERY_BROKER_URL") or _get(env, "REDIS_URL") or embedded


def _embedded_secret(var_dir: Path) -> str:
    """A per-machine random secret for the embedded default, kept so tokens survive restarts."""
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret
