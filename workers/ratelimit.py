"""Global upstream rate limit: requests and tokens per minute, per model, shared by every worker.

Gemini's quota is per Google project, so the limit has to hold across all worker processes on
all machines; Celery's ``rate_limit`` is per worker and cannot do this. The Redis limiter runs
GCRA (the generic cell rate algorithm) in one Lua script on Redis's own clock; the local limiter
runs the same algorithm in-process for the embedded default.

GCRA keeps, per model and dimension, a *theoretical arrival time* (TAT): the moment the bucket
would be empty again if nothing more arrived. A call costing ``n`` units moves it ``n`` emission
intervals ahead. A call passes when the backlog ``TAT - now`` left after it fits within the burst
tolerance, so over any window the fleet gets at most ``burst_seconds`` worth of extra calls.

Batch calls (``batch=True``: jobs on the ``batch`` queue) take room in a second pair of buckets
as well, sized to ``batch_share`` of the model's limit, in the same all-or-nothing step: however
large a batch, ``1 - batch_share`` of every limit stays free for interactive calls.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config import BatchSettings, env_int

log = logging.getLogger(__name__)

DEFAULT_KEY = "DEFAULT"
_RPM_PREFIX = "GEMINI_RPM_"
_TPM_PREFIX = "GEMINI_TPM_"
# A limiter call must never hold a job up for long, least of all when Redis is down.
REDIS_SOCKET_TIMEOUT_S = 0.5
# After a Redis failure, skip Redis for this long rather than paying a timeout on every call.
OUTAGE_RETRY_AFTER_S = 5.0


@dataclass(frozen=True)
class ModelLimit:
    """Per-minute limits for one model; ``None`` means that dimension is unlimited."""

    requests_per_minute: int | None
    tokens_per_minute: int | None

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None


def model_key(model: str) -> str:
    """The model's name as env var names spell it: ``gemini-2.5-flash`` -> ``GEMINI_2_5_FLASH``."""
    return re.sub(r"[^A-Z0-9]", "_", model.upper())


def limits_from_env(env: Mapping[str, str]) -> dict[str, ModelLimit]:
    """Limits from ``GEMINI_RPM_<MODEL>`` / ``GEMINI_TPM_<MODEL>`` and the ``..._DEFAULT`` pair.

    Keys are ``model_key`` names plus ``DEFAULT``; a model setting one dimension only takes the
    other from the defaults. Unset or empty means unlimited.
    """
    default_rpm = _positive_limit(env, _RPM_PREFIX + DEFAULT_KEY)
    default_tpm = _positive_limit(env, _TPM_PREFIX + DEFAULT_KEY)
    keys = {
        name[len(prefix) :]
        for name in env
        for prefix in (_RPM_PREFIX, _TPM_PREFIX)
        if name.startswith(prefix) and len(name) > len(prefix)
    }
    limits: dict[str, ModelLimit] = {}
    for key in sorted(keys - {DEFAULT_KEY}):
        rpm = _positive_limit(env, _RPM_PREFIX + key)
        tpm = _positive_limit(env, _TPM_PREFIX + key)
        if rpm is None and tpm is None:
            continue  # only empty values: the defaults apply anyway
        limits[key] = ModelLimit(
            requests_per_minute=default_rpm if rpm is None else rpm,
            tokens_per_minute=default_tpm if tpm is None else tpm,
        )
    if default_rpm is not None or default_tpm is not None:
        limits[DEFAULT_KEY] = ModelLimit(default_rpm, default_tpm)
    return limits


def _positive_limit(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name, "").strip():
        return None
    value = env_int(env, name, 0)
    if value <= 0:
        raise RuntimeError(f"{name} must be a positive whole number (or empty for no limit)")
    return value


@runtime_checkable
class RateLimiter(Protocol):
    def acquire(self, model: str, tokens: int = 0, *, batch: bool = False) -> float:
        """Take one request and ``tokens`` tokens now and return 0.0, or take nothing and
        return the seconds to wait before the same call could pass. ``batch``: a batch job's
        call, held to the batch share of the limit as well."""
        ...

    def settle(self, model: str, estimated_tokens: int, actual_tokens: int, *,
               batch: bool = False) -> None:
        """Charge real minus estimated tokens after the call (a debt delays later callers;
        a negative difference refunds)."""
        ...


@dataclass(frozen=True)
class _Bucket:
    """One GCRA bucket a call takes from: its name, seconds per unit (0.0: unlimited), units."""

    name: str
    interval: float
    cost: int


class _Limits:
    """Model-name lookup shared by both limiters: the model's own limit, else the default."""

    def __init__(self, limits: Mapping[str, ModelLimit], burst_seconds: float,
                 batch_share: float = 1.0) -> None:
        if burst_seconds < 0:
            raise ValueError("burst_seconds must not be negative")
        if not 0.0 < batch_share <= 1.0:
            raise ValueError("batch_share must be above 0 and at most 1")
        self._limits = {model_key(name): limit for name, limit in limits.items()}
        self.burst_seconds = burst_seconds
        self.batch_share = batch_share

    def find(self, model: str) -> tuple[str, ModelLimit] | None:
        key = model_key(model)
        limit = self._limits.get(key) or self._limits.get(DEFAULT_KEY)
        if limit is None or limit.unlimited:
            return None
        return key, limit

    def buckets(self, limit: ModelLimit, tokens: int, batch: bool) -> list[_Bucket]:
        """The buckets a call takes from: the model's, plus its batch share's for a batch call."""
        found = [_Bucket("requests", _seconds_per(limit.requests_per_minute), 1),
                 _Bucket("tokens", _seconds_per(limit.tokens_per_minute), tokens)]
        if batch and self.batch_share < 1.0:
            found += [_Bucket(f"batch-{b.name}", b.interval / self.batch_share, b.cost)
                      for b in found[:2]]
        return found


def _seconds_per(per_minute: int | None) -> float:
    """GCRA's emission interval; 0.0 marks an unlimited dimension."""
    return 60.0 / per_minute if per_minute else 0.0


def _check_tokens(tokens: int) -> None:
    if tokens < 0:
        raise ValueError("tokens must not be negative")


# KEYS: one TAT per bucket.  ARGV: burst tolerance in seconds, then per bucket its seconds per
# unit (0 = unlimited) and the units wanted.  Returns {1, "0"} when granted, else {0, wait}.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tau = tonumber(ARGV[1])
local intervals = {}
local costs = {}
for i = 1, #KEYS do
  intervals[i] = tonumber(ARGV[2 * i])
  costs[i] = tonumber(ARGV[2 * i + 1])
end
local new_tats = {}
local wait = 0
for i = 1, #KEYS do
  if intervals[i] > 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local increment = costs[i] * intervals[i]
    -- The backlog this call may find: the tolerance minus its own cost, but never below zero,
    -- so a call bigger than the whole burst still passes once the bucket is idle (and leaves
    -- a debt that later callers wait out).
    local allowed = math.max(tau - increment, 0)
    if tat - now > allowed then
      wait = math.max(wait, tat - now - allowed)
    elseif increment > 0 then
      new_tats[i] = tat + increment
    end
  end
end
if wait > 0 then
  return {0, tostring(wait)}
end
for i = 1, #KEYS do
  if new_tats[i] then
    local ttl_ms = math.ceil((new_tats[i] - now) * 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.6f', new_tats[i]), 'PX', ttl_ms)
  end
end
return {1, '0'}
"""

# KEYS: token TAT.  ARGV: seconds per token, tokens to charge (negative refunds).
_SETTLE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1]) * tonumber(ARGV[2])
-- A refund never reaches back before now: an idle bucket cannot bank extra burst.
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  local ttl_ms = math.ceil((new_tat - now) * 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
end
return 1
"""


class RedisRateLimiter:
    """GCRA on Redis, one atomic script per call, timed by the Redis server's clock."""

    def __init__(
        self,
        redis_client: redis.Redis,
        limits: Mapping[str, ModelLimit],
        *,
        burst_seconds: float = 1.0,
        key_prefix: str = "lifetales:ratelimit",
        batch_share: float = 1.0,
    ) -> None:
        self._limits = _Limits(limits, burst_seconds, batch_share)
        self._redis = redis_client
        self._prefix = key_prefix
        self._acquire_script = redis_client.register_script(_ACQUIRE_LUA)
        self._settle_script = redis_client.register_script(_SETTLE_LUA)
        self._skip_redis_until = 0.0

    def acquire(self, model: str, tokens: int = 0, *, batch: bool = False) -> float:
        _check_tokens(tokens)
        found = self._limits.find(model)
        if found is None or self._in_outage():
            return 0.0
        key, limit = found
        buckets = self._limits.buckets(limit, tokens, batch)
        args: list[float] = [self._limits.burst_seconds]
        for bucket in buckets:
            args += [bucket.interval, bucket.cost]
        try:
            granted, wait = self._acquire_script(
                keys=[self._key(key, b.name) for b in buckets], args=args)
        except redis.RedisError as exc:
            self._fail_open(model, exc)
            return 0.0
        self._recovered()
        if int(granted) == 1:
            return 0.0
        # A denial always asks for some wait, however small the float rounds.
        return max(float(wait), 1e-6)

    def settle(self, model: str, estimated_tokens: int, actual_tokens: int, *,
               batch: bool = False) -> None:
        found = self._limits.find(model)
        delta = actual_tokens - estimated_tokens
        if found is None or delta == 0 or self._in_outage():
            return
        key, limit = found
        try:
            for bucket in self._limits.buckets(limit, 0, batch):
                if bucket.name.endswith("tokens") and bucket.interval:
                    self._settle_script(keys=[self._key(key, bucket.name)],
                                        args=[bucket.interval, delta])
        except redis.RedisError as exc:
            self._fail_open(model, exc)
            return
        self._recovered()

    def _key(self, key: str, bucket: str) -> str:
        # The hash tag keeps every key of a model in one Redis Cluster slot, as a script needs.
        return f"{self._prefix}:{{{key}}}:{bucket}"

    def _in_outage(self) -> bool:
        return time.monotonic() < self._skip_redis_until

    def _fail_open(self, model: str, exc: redis.RedisError) -> None:
        # Fail open: a limiter outage must not stop all work. Upstream 429s are still retried
        # with backoff, so the worst case is a burst of retries until Redis is back.
        if self._skip_redis_until == 0.0:
            log.warning(
                "rate limiter unavailable; calls pass unlimited until Redis answers again",
                extra={"model": model, "error": type(exc).__name__},
            )
        self._skip_redis_until = time.monotonic() + OUTAGE_RETRY_AFTER_S

    def _recovered(self) -> None:
        if self._skip_redis_until != 0.0:
            self._skip_redis_until = 0.0
            log.info("rate limiter available again")


class LocalRateLimiter:
    """The same GCRA in-process (thread-safe, monotonic clock), for the embedded default."""

    def __init__(self, limits: Mapping[str, ModelLimit], *, burst_seconds: float = 1.0,
                 batch_share: float = 1.0) -> None:
        self._limits = _Limits(limits, burst_seconds, batch_share)
        self._lock = threading.Lock()
        self._tats: dict[tuple[str, str], float] = {}

    def acquire(self, model: str, tokens: int = 0, *, batch: bool = False) -> float:
        _check_tokens(tokens)
        found = self._limits.find(model)
        if found is None:
            return 0.0
        key, limit = found
        with self._lock:
            now = time.monotonic()
            wait = 0.0
            new_tats: dict[tuple[str, str], float] = {}
            for bucket in self._limits.buckets(limit, tokens, batch):
                if bucket.interval == 0.0:
                    continue
                tat = max(self._tats.get((key, bucket.name), now), now)
                increment = bucket.cost * bucket.interval
                allowed = max(self._limits.burst_seconds - increment, 0.0)
                if tat - now > allowed:
                    wait = max(wait, tat - now - allowed)
                else:
                    new_tats[(key, bucket.name)] = tat + increment
            if wait > 0.0:
                return wait
            self._tats.update(new_tats)  # all or nothing
            return 0.0

    def settle(self, model: str, estimated_tokens: int, actual_tokens: int, *,
               batch: bool = False) -> None:
        found = self._limits.find(model)
        delta = actual_tokens - estimated_tokens
        if found is None or delta == 0:
            return
        key, limit = found
        with self._lock:
            now = time.monotonic()
            for bucket in self._limits.buckets(limit, 0, batch):
                if not bucket.name.endswith("tokens") or not bucket.interval:
                    continue
                tat = max(self._tats.get((key, bucket.name), now), now)
                # A refund never reaches back before now: an idle bucket cannot bank extra burst.
                self._tats[(key, bucket.name)] = max(tat + delta * bucket.interval, now)


def redis_client_for_limiter(redis_url: str) -> redis.Redis:
    """A client that answers or fails within a second: no retries, short socket timeouts."""
    return redis.Redis.from_url(
        redis_url,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


def build_rate_limiter(redis_url: str | None, env: Mapping[str, str]) -> RateLimiter:
    """The Redis limiter when a Redis URL is configured, the in-process one otherwise; batch
    calls get what INTERACTIVE_RESERVED_SHARE leaves of each limit."""
    limits = limits_from_env(env)
    batch_share = 1.0 - BatchSettings.from_env(env).interactive_reserved_share
    kind = "redis" if redis_url else "local"
    log.info("upstream rate limiter: %s", kind, extra={"limited_models": sorted(limits),
                                                         "batch_share": batch_share})
    if redis_url:
        return RedisRateLimiter(redis_client_for_limiter(redis_url), limits,
                                batch_share=batch_share)
    return LocalRateLimiter(limits, batch_share=batch_share)
