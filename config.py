"""Application settings, read from the environment by the app and worker factories."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agents.config import AgentSettings
from models.db import normalize_database_url

DEFAULT_VAR_DIR = Path("var")
# Threads per worker process; I/O-bound jobs spend their time waiting on Gemini.
DEFAULT_CONCURRENCY = 16

# USD per 1M tokens (input, output) per model: Google's list prices for the paid Gemini API tier
# when written. They change: keep them current. Used for the cost metric and `lifetales usage`;
# a model missing here (the offline provider's) has no estimated cost.
MODEL_PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-image": (0.30, 30.00),
}


def estimated_cost_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """Estimated cost of these tokens at list price; None for a model without a price."""
    prices = MODEL_PRICES_USD_PER_MTOK.get(model)
    if prices is None:
        return None
    return (input_tokens * prices[0] + output_tokens * prices[1]) / 1_000_000


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
    for kind in ("transcription", "story", "illustration"):
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
