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
