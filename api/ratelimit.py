"""Request rate limits (flask-limiter): who may call how often, and the headers that say so.

Every request belongs to a *group*, set by its view class as ``rate_limit_group``:

- ``general`` (the default): the per-user budget (``RATE_LIMIT_PER_USER``; by IP when anonymous);
- ``polling``: ``GET /jobs/{id}`` and its event stream, which clients repeat while a job runs:
  their own per-user budget (``RATE_LIMIT_POLLING``) instead of the general one, so polling never
  starves the rest of the API and the rest never starves polling;
- ``auth``: register, login and password change: the general budget plus a strict per-IP one
  (``RATE_LIMIT_AUTH``) against password guessing and account farming;
- ``files``: the locally stored media files, which pages load many at a time;
- ``unlimited``: probes and scrapes (``/health``, ``/ready``, ``/metrics``) and CORS preflights.

All groups but ``unlimited`` also count against a per-IP ceiling (``RATE_LIMIT_PER_IP``).
Submits that cost a model call spend a per-user *budget* as well, charged by the view once the
request is known to be valid (``charge("transcription")``): an invalid request, or a photo upload,
costs nothing. Storage is Redis when ``REDIS_URL`` is set (shared by every API process), memory
otherwise; if Redis fails, limits fall back to per-process memory rather than refusing requests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis
from flask import Flask, Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RequestLimit
from flask_smorest import abort
from limits import RateLimitItem, parse_many
from limits.strategies import MovingWindowRateLimiter

from api.auth import current_user_id, token_subject
from config import RateLimitSettings, Settings

log = logging.getLogger(__name__)

EXTENSION = "lifetales.rate_limits"
KEY_PREFIX = "lifetales-rl"
STORAGE_TIMEOUT_S = 1  # seconds
GROUPS = frozenset({"general", "polling", "auth", "files", "unlimited"})
# Load balancers' probes and Prometheus' scrapes: never limited, never redirected to HTTPS.
PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
# Budgets a view charges explicitly; each names a RateLimitSettings field.
BUDGETS = {"transcription": "transcriptions", "story": "story generations",
           "illustration": "illustrations", "film": "films", "narration": "narrations",
           "narrator_clip": "narrator clips"}


@dataclass
class RateLimits:
    """One app's limiter and the strategy its per-user budgets are counted with."""

    limiter: Limiter
    budgets: MovingWindowRateLimiter | None
    settings: RateLimitSettings


def client_ip() -> str:
    return request.remote_addr or "unknown"


def user_or_ip() -> str:
    """Whom the general budgets count: the user a genuine token names, else the address."""
    subject = token_subject()
    return f"user:{subject}" if subject else f"ip:{client_ip()}"


def ip_key() -> str:
    return f"ip:{client_ip()}"


def rate_limit_group() -> str:
    if request.method == "OPTIONS" or request.path in PROBE_PATHS:
        return "unlimited"
    view = current_app.view_functions.get(request.endpoint or "")
    return str(getattr(getattr(view, "view_class", None), "rate_limit_group", "general"))


@dataclass(frozen=True)
class OutsideGroups:
    """``exempt_when`` of a limit that counts the requests of some groups only."""

    groups: frozenset[str]

    def __call__(self) -> bool:
        return rate_limit_group() not in self.groups


def _limit(value: str, scope: str, *, by_ip: bool, groups: set[str], what: str
           ) -> ApplicationLimit:
    return ApplicationLimit(
        value, scope=scope, key_function=ip_key if by_ip else user_or_ip,
        exempt_when=OutsideGroups(frozenset(groups)),
        error_message=f"rate limit exceeded: at most {value} {what}",
    )


def init_rate_limits(app: Flask, settings: Settings) -> None:
    """Install this app's limiter and the RateLimit-* response headers."""
    limits = settings.rate_limits
    limiter = Limiter(
        user_or_ip,
        application_limits=[
            _limit(limits.per_user, "user", by_ip=False, groups={"general", "auth"},
                   what="API requests per user"),
            _limit(limits.polling, "polling", by_ip=False, groups={"polling"},
                   what="job status reads per user"),
            _limit(limits.auth, "auth", by_ip=True, groups={"auth"},
                   what="sign-in and account requests per address"),
            _limit(limits.per_ip, "ip", by_ip=True, groups=set(GROUPS - {"unlimited"}),
                   what="requests per address"),
        ],
        storage_uri=settings.redis_url or "memory://",
        # Every request waits on this storage: a hung Redis must not hang the API.
        storage_options={"socket_timeout": STORAGE_TIMEOUT_S,
                         "socket_connect_timeout": STORAGE_TIMEOUT_S},
        strategy="fixed-window",
        key_prefix=KEY_PREFIX,
        # Redis down: count in this process's memory rather than refuse or fail every request.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        headers_enabled=False,  # ours below: the IETF RateLimit-* fields, Reset in seconds
        enabled=limits.enabled,
    )
    limiter.init_app(app)
    # Budgets are few and dear (3 stories an hour): an exact moving window, not fixed windows
    # that let a client spend twice its budget across a window boundary.
    budgets = MovingWindowRateLimiter(limiter.storage) if limits.enabled else None
    app.extensions[EXTENSION] = RateLimits(limiter, budgets, limits)
    app.after_request(_rate_limit_headers)
    for endpoint, view in app.view_functions.items():
        group = getattr(getattr(view, "view_class", None), "rate_limit_group", "general")
        if group not in GROUPS:
            raise RuntimeError(f"{endpoint}: unknown rate_limit_group {group!r}")


def charge(budget: str) -> None:
    """Spend one of the current user's ``budget`` (a model call); 429 when it is spent."""
    limits: RateLimits = current_app.extensions[EXTENSION]
    if limits.budgets is None:
        return
    value = getattr(limits.settings, budget)
    identifiers = (KEY_PREFIX, f"user:{current_user_id()}", budget)
    for item in parse_many(value):
        try:
            allowed = limits.budgets.hit(item, *identifiers)
        except (redis.RedisError, OSError):
            # Fail open: the general limits (in-memory fallback) still hold.
            log.warning("rate limit storage unavailable", extra={"budget": budget},
                        exc_info=True)
            return
        g.rate_limit_budget = (item, identifiers)
        if not allowed:
            wait = _seconds_until_reset(limits, item, identifiers)
            abort(429, message=f"rate limit exceeded: at most {value} {BUDGETS[budget]} per "
                               f"user; retry in {wait} s")


def _seconds_until_reset(limits: RateLimits, item: RateLimitItem,
                         identifiers: tuple[str, ...]) -> int:
    assert limits.budgets is not None
    reset_at, _remaining = limits.budgets.get_window_stats(item, *identifiers)
    return max(1, int(reset_at - time.time() + 0.999))


def _rate_limit_headers(response: Response) -> Response:
    """RateLimit-Limit/-Remaining/-Reset/-Policy (draft-ietf-httpapi-ratelimit-headers) of the
    tightest limit the request counted against; Retry-After when it was refused."""
    limits: RateLimits | None = current_app.extensions.get(EXTENSION)
    if limits is None or not limits.settings.enabled:
        return response
    try:
        window = _tightest_window(limits)
    except (redis.RedisError, OSError):
        return response  # headers are a courtesy; the request was already counted (or not)
    if window is None:
        return response
    amount, seconds, remaining, reset_in = window
    response.headers["RateLimit-Limit"] = str(amount)
    response.headers["RateLimit-Remaining"] = str(remaining)
    response.headers["RateLimit-Reset"] = str(reset_in)
    response.headers["RateLimit-Policy"] = f"{amount};w={seconds}"
    if response.status_code == 429:
        response.headers["Retry-After"] = str(reset_in)
    return response


def _tightest_window(limits: RateLimits) -> tuple[int, int, int, int] | None:
    """(limit, window seconds, remaining, seconds to reset) of the breached limit, else of the
    one with the fewest requests left."""
    now = time.time()
    budget = g.get("rate_limit_budget")
    if budget is not None and limits.budgets is not None:
        item, identifiers = budget
        reset_at, remaining = limits.budgets.get_window_stats(item, *identifiers)
        return _window(item, remaining, reset_at, now)
    current: RequestLimit | None = limits.limiter.current_limit
    if current is None:
        return None
    if not current.breached:
        current = min(limits.limiter.current_limits, key=lambda lim: lim.remaining)
    reset_at, remaining = current.window
    return _window(current.limit, remaining, reset_at, now)


def _window(item: RateLimitItem, remaining: int, reset_at: float,
            now: float) -> tuple[int, int, int, int]:
    return item.amount, item.get_expiry(), remaining, max(1, int(reset_at - now + 0.999))
