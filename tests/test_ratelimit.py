"""The global upstream rate limiter: GCRA on real Redis (and in-process), env parsing, fail-open,
and a fleet of processes sharing one limit."""

from __future__ import annotations

import inspect
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
import redis

from bench.ratelimit import max_in_window, run_fleet
from tests.conftest import REDIS_BASE
from workers import ratelimit
from workers.ratelimit import (
    LocalRateLimiter,
    ModelLimit,
    RateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
    limits_from_env,
    model_key,
    redis_client_for_limiter,
)

LIMITER_REDIS_URL = f"{REDIS_BASE}/12"
MODEL = "gemini-2.5-flash"

MakeLimiter = Callable[[Mapping[str, ModelLimit], float], RateLimiter]


def limit(rpm: int | None = None, tpm: int | None = None) -> dict[str, ModelLimit]:
    return {MODEL: ModelLimit(requests_per_minute=rpm, tokens_per_minute=tpm)}


@pytest.fixture
def limiter_redis() -> Iterator[redis.Redis]:
    client = redis_client_for_limiter(LIMITER_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=["redis", "local"])
def make_limiter(request: pytest.FixtureRequest, limiter_redis: redis.Redis) -> MakeLimiter:
    """Both implementations, so every behaviour below is checked on each."""
    if request.param == "redis":
        return lambda limits, burst: RedisRateLimiter(limiter_redis, limits, burst_seconds=burst)
    return lambda limits, burst: LocalRateLimiter(limits, burst_seconds=burst)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local port that accepts connections into its backlog and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


# --- GCRA ----------------------------------------------------------------------------------


def test_burst_then_one_interval_between_calls(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(rpm=600), 0.25)  # one call per 0.1 s, 2 at once
    assert limiter.acquire(MODEL) == 0.0
    assert limiter.acquire(MODEL) == 0.0
    wait = limiter.acquire(MODEL)
    assert 0.03 < wait <= 0.05
    time.sleep(wait)
    assert limiter.acquire(MODEL) == 0.0
    # The burst is spent: back-to-back calls are now one emission interval apart.
    wait = limiter.acquire(MODEL)
    assert 0.08 < wait <= 0.1
    time.sleep(wait)
    assert limiter.acquire(MODEL) == 0.0


def test_without_burst_every_call_waits_the_interval(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(rpm=300), 0.0)  # one call per 0.2 s
    assert limiter.acquire(MODEL) == 0.0
    wait = limiter.acquire(MODEL)
    assert 0.18 < wait <= 0.2
    assert limiter.acquire(MODEL) > 0.15  # a denied call took nothing
    time.sleep(wait)
    assert limiter.acquire(MODEL) == 0.0


def test_token_wait_is_proportional_to_the_tokens_asked(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(tpm=6000), 1.0)  # 100 tokens/s, 100 tokens of burst
    assert limiter.acquire(MODEL, 80) == 0.0
    # 0.8 s of backlog; a call of n tokens may find at most 1.0 - n/100 s of it.
    wait_50 = limiter.acquire(MODEL, 50)
    wait_70 = limiter.acquire(MODEL, 70)
    assert 0.27 < wait_50 <= 0.3
    assert 0.47 < wait_70 <= 0.5
    assert limiter.acquire(MODEL, 10) == 0.0  # the denials took nothing


def test_a_call_larger_than_the_burst_passes_when_idle_and_leaves_a_debt(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(limit(tpm=6000), 1.0)
    assert limiter.acquire(MODEL, 500) == 0.0  # 5 s of tokens, only 1 s of burst
    # 5 s of backlog; a 1-token call may find 0.99 s of it.
    assert 3.9 < limiter.acquire(MODEL, 1) <= 4.01


def test_denied_on_tokens_takes_no_request(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(rpm=600, tpm=6000), 1.0)  # 10 requests, 100 tokens of burst
    assert limiter.acquire(MODEL, 90) == 0.0
    assert limiter.acquire(MODEL, 50) > 0.3  # tokens short; a request slot was free
    # Nine more requests fit in the burst only if the denied call left its request slot.
    assert [limiter.acquire(MODEL) for _ in range(9)] == [0.0] * 9
    assert limiter.acquire(MODEL) > 0.0


def test_denied_on_requests_takes_no_tokens(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(rpm=600, tpm=6000), 1.0)
    assert limiter.acquire(MODEL, 60) == 0.0
    assert [limiter.acquire(MODEL) for _ in range(9)] == [0.0] * 9  # requests spent
    assert limiter.acquire(MODEL, 30) > 0.0  # denied on requests; tokens alone would pass
    # 0.6 s of token backlog if the 30 tokens were not taken (0.9 s if they were): a call of
    # 80 tokens may find 0.2 s, so it waits about 0.4 s.
    assert 0.35 < limiter.acquire(MODEL, 80) <= 0.4


def test_settle_charges_a_debt_and_refunds(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(rpm=6000, tpm=6000), 1.0)
    assert limiter.acquire(MODEL, 10) == 0.0
    limiter.settle(MODEL, estimated_tokens=10, actual_tokens=110)  # 1.1 s of token backlog
    assert 0.05 < limiter.acquire(MODEL) <= 0.1
    limiter.settle(MODEL, estimated_tokens=110, actual_tokens=10)  # back to 0.1 s
    assert limiter.acquire(MODEL, 85) == 0.0


def test_a_refund_on_an_idle_bucket_banks_no_extra_burst(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(tpm=6000), 1.0)
    limiter.settle(MODEL, estimated_tokens=500, actual_tokens=0)
    assert limiter.acquire(MODEL, 100) == 0.0
    assert limiter.acquire(MODEL, 1) > 0.0


def test_unlimited_models_always_pass(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limit(rpm=60), 0.0)
    assert limiter.acquire(MODEL) == 0.0
    assert [limiter.acquire("gemini-2.5-flash-image", 10_000) for _ in range(100)] == [0.0] * 100
    limiter.settle("gemini-2.5-flash-image", 0, 10**9)
    assert limiter.acquire(MODEL) > 0.0  # the limited model is still limited


def test_default_limit_applies_to_each_model_separately(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter({"DEFAULT": ModelLimit(60, None)}, 0.0)
    assert limiter.acquire("model-a") == 0.0
    assert limiter.acquire("model-b") == 0.0
    assert limiter.acquire("model-a") > 0.0


def test_negative_tokens_are_refused(make_limiter: MakeLimiter) -> None:
    with pytest.raises(ValueError):
        make_limiter(limit(tpm=6000), 1.0).acquire(MODEL, -1)


def test_redis_keys_share_a_cluster_slot_and_expire(limiter_redis: redis.Redis) -> None:
    limiter = RedisRateLimiter(limiter_redis, limit(rpm=600, tpm=6000))
    assert limiter.acquire(MODEL, 50) == 0.0
    requests_key = "lifetales:ratelimit:{GEMINI_2_5_FLASH}:requests"
    tokens_key = "lifetales:ratelimit:{GEMINI_2_5_FLASH}:tokens"
    assert sorted(limiter_redis.keys()) == [requests_key.encode(), tokens_key.encode()]
    # Each key lives until its bucket is idle again, plus a second.
    assert 1000 < limiter_redis.pttl(requests_key) <= 1100
    assert 1400 < limiter_redis.pttl(tokens_key) <= 1500
    limiter.settle(MODEL, 50, 250)
    assert 3400 < limiter_redis.pttl(tokens_key) <= 3500


def test_unlimited_model_does_not_touch_redis(
    refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = build_rate_limiter(
        f"redis://127.0.0.1:{refused_port}/12", {"GEMINI_RPM_GEMINI_2_5_FLASH": "60"}
    )
    with caplog.at_level(logging.WARNING, logger="workers.ratelimit"):
        assert limiter.acquire("gemini-2.5-flash-image") == 0.0
        limiter.settle("gemini-2.5-flash-image", 0, 100)
    assert caplog.records == []  # any Redis call would have failed and warned


# --- fail open -----------------------------------------------------------------------------


def test_fails_open_quickly_and_quietly_when_redis_refuses(
    refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = build_rate_limiter(
        f"redis://:s3cret-password@127.0.0.1:{refused_port}/12", {"GEMINI_RPM_DEFAULT": "1"}
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="workers.ratelimit"):
        waits = [limiter.acquire(MODEL, 100) for _ in range(20)]
        limiter.settle(MODEL, 100, 5000)
    assert waits == [0.0] * 20
    assert time.monotonic() - started < 1.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per outage, not once per call
    assert "s3cret" not in repr([vars(r) for r in caplog.records])


def test_fails_open_within_the_socket_timeout_when_redis_hangs(silent_port: int) -> None:
    limiter = build_rate_limiter(f"redis://127.0.0.1:{silent_port}/12", {"GEMINI_RPM_DEFAULT": "1"})
    started = time.monotonic()
    assert limiter.acquire(MODEL) == 0.0
    assert time.monotonic() - started < ratelimit.REDIS_SOCKET_TIMEOUT_S * 2 + 0.5
    # Later calls skip Redis for a while rather than each paying the timeout again.
    started = time.monotonic()
    assert [limiter.acquire(MODEL) for _ in range(10)] == [0.0] * 10
    assert time.monotonic() - started < 0.1


def test_limits_again_once_redis_is_back(
    refused_port: int, limiter_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "OUTAGE_RETRY_AFTER_S", 0.2)
    real = redis.Redis.from_url(LIMITER_REDIS_URL).connection_pool.connection_kwargs
    pool = redis.ConnectionPool(
        host="127.0.0.1", port=refused_port, db=real["db"], socket_connect_timeout=0.5
    )
    limiter = RedisRateLimiter(redis.Redis(connection_pool=pool), limit(rpm=60), burst_seconds=0)
    assert [limiter.acquire(MODEL) for _ in range(3)] == [0.0] * 3  # down: open
    pool.connection_kwargs.update(host=real["host"], port=real["port"])  # Redis is "back"
    pool.reset()  # drop the connection objects that remember the dead port
    time.sleep(0.25)
    assert limiter.acquire(MODEL) == 0.0
    assert limiter.acquire(MODEL) > 0.0


# --- configuration -------------------------------------------------------------------------


def test_model_key_spells_the_model_as_env_names_do() -> None:
    assert model_key("gemini-2.5-flash") == "GEMINI_2_5_FLASH"
    assert model_key("gemini-2.5-flash-image") == "GEMINI_2_5_FLASH_IMAGE"


def test_limits_from_env() -> None:
    env = {
        "GEMINI_RPM_GEMINI_2_5_FLASH": "1000",
        "GEMINI_TPM_GEMINI_2_5_FLASH": "",  # empty: the default applies
        "GEMINI_TPM_GEMINI_2_5_FLASH_IMAGE": "20000",
        "GEMINI_RPM_OTHER": " ",  # only empty values: no entry
        "GEMINI_RPM_DEFAULT": "",
        "GEMINI_TPM_DEFAULT": "500000",
        "UNRELATED": "x",
    }
    assert limits_from_env(env) == {
        "GEMINI_2_5_FLASH": ModelLimit(requests_per_minute=1000, tokens_per_minute=500000),
        "GEMINI_2_5_FLASH_IMAGE": ModelLimit(requests_per_minute=None, tokens_per_minute=20000),
        "DEFAULT": ModelLimit(requests_per_minute=None, tokens_per_minute=500000),
    }
    assert limits_from_env({}) == {}
    assert limits_from_env({"GEMINI_RPM_DEFAULT": "", "GEMINI_TPM_DEFAULT": ""}) == {}


@pytest.mark.parametrize("value", ["ten", "-5", "0", "1.5"])
def test_limits_from_env_rejects_bad_values(value: str) -> None:
    with pytest.raises(RuntimeError, match="GEMINI_RPM_GEMINI_2_5_FLASH"):
        limits_from_env({"GEMINI_RPM_GEMINI_2_5_FLASH": value})


def test_env_limits_apply_by_model_name() -> None:
    limiter = LocalRateLimiter(
        limits_from_env({"GEMINI_RPM_GEMINI_2_5_FLASH": "60"}), burst_seconds=0
    )
    assert limiter.acquire("gemini-2.5-flash") == 0.0
    assert limiter.acquire("gemini-2.5-flash") > 0.0
    assert limiter.acquire("gemini-2.5-flash-image") == 0.0


def test_build_picks_redis_with_a_url_and_local_without(refused_port: int) -> None:
    # Building never connects: the refused port is not a problem here.
    remote = build_rate_limiter(f"redis://127.0.0.1:{refused_port}/12", {})
    assert isinstance(remote, RedisRateLimiter)
    assert isinstance(build_rate_limiter(None, {}), LocalRateLimiter)


@pytest.mark.parametrize("implementation", [RedisRateLimiter, LocalRateLimiter])
def test_both_limiters_satisfy_the_protocol(implementation: type) -> None:
    for name in ("acquire", "settle"):
        expected = inspect.signature(getattr(RateLimiter, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name
    sample: RateLimiter = LocalRateLimiter({})
    assert isinstance(sample, RateLimiter)


# --- a fleet of processes ------------------------------------------------------------------


def test_max_in_window_counts_half_open_windows() -> None:
    assert max_in_window([], 1.0) == 0
    assert max_in_window([0.0, 0.5, 1.0, 1.2, 1.4, 5.0], 1.0) == 4
    assert max_in_window([0.0, 0.5, 1.0], 1.0) == 2


def test_processes_sharing_one_limit_stay_within_it(limiter_redis: redis.Redis) -> None:
    rpm, seconds, procs, burst_seconds = 600, 6.0, 4, 1.0
    rate = rpm / 60
    per_process = run_fleet(
        LIMITER_REDIS_URL, rpm=rpm, seconds=seconds, procs=procs, burst_seconds=burst_seconds
    )
    assert all(per_process), "every process should have been granted some calls"
    times = sorted(t for grants in per_process for t in grants)
    span = times[-1] - times[0]
    # GCRA's bound over any stretch: the rate, plus the burst, plus the call at the start.
    assert len(times) <= rate * span + rate * burst_seconds + 1
    assert max_in_window(times, 1.0) <= rate * (1 + burst_seconds) + 1
    # Once the initial burst is spent the fleet gets the plain rate, not more.
    steady = [t for t in times if t >= times[0] + 2 * burst_seconds]
    assert max_in_window(steady, 1.0) <= rate + 1
    # ... and not much less: the limiter does not starve a busy fleet.
    assert len(times) >= 0.9 * rate * span
