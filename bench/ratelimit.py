"""Benchmark the global rate limiter: N processes hammer one model's limit on a real Redis.

Run: .venv/bin/python bench/ratelimit.py [--rpm 120] [--seconds 120] [--procs 4]

Each process has its own Redis client and calls ``acquire`` in a loop, sleeping the wait it is
given; grant times are collected and the busiest sliding window is compared with the limit.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import redis

from workers.ratelimit import ModelLimit, RedisRateLimiter, redis_client_for_limiter

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
BENCH_MODEL = "bench-model"
KEY_PREFIX = "lifetales:ratelimit-bench"
TARGET_OVERSHOOT_PCT = 2.0


def hammer(
    redis_url: str,
    rpm: int,
    burst_seconds: float,
    seconds: float,
    start: Barrier,
    results: Queue[list[float]],
) -> None:
    """One worker process: take grants as fast as the limiter allows; report their times."""
    limiter = RedisRateLimiter(
        redis_client_for_limiter(redis_url),
        {BENCH_MODEL: ModelLimit(requests_per_minute=rpm, tokens_per_minute=None)},
        burst_seconds=burst_seconds,
        key_prefix=KEY_PREFIX,
    )
    grants: list[float] = []
    start.wait()
    stop = time.time() + seconds
    while (now := time.time()) < stop:
        wait = limiter.acquire(BENCH_MODEL)
        if wait == 0.0:
            grants.append(time.time())
        else:
            time.sleep(min(wait, stop - now))
    results.put(grants)


def run_fleet(
    redis_url: str, *, rpm: int, seconds: float, procs: int, burst_seconds: float = 1.0
) -> list[list[float]]:
    """Run ``procs`` spawned processes against a fresh limit; each one's grant times."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3)
    stale = list(client.scan_iter(match=f"{KEY_PREFIX}:*"))
    if stale:
        client.delete(*stale)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(procs)
    results: Queue[list[float]] = ctx.Queue()
    workers = [
        ctx.Process(target=hammer, args=(redis_url, rpm, burst_seconds, seconds, start, results))
        for _ in range(procs)
    ]
    for worker in workers:
        worker.start()
    # Drain before joining: a child blocks on exit until its queued result is read.
    per_process = [results.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
        if worker.exitcode != 0:
            raise RuntimeError(f"bench process exited with {worker.exitcode}")
    return per_process


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most grants in any half-open window ``[t, t + window)`` (``times`` sorted)."""
    return max(
        (bisect.bisect_left(times, start + window, lo=i) - i for i, start in enumerate(times)),
        default=0,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=120, help="requests per minute (default 120)")
    parser.add_argument("--seconds", type=float, default=120.0, help="run length (default 120)")
    parser.add_argument("--procs", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--burst", type=float, default=1.0, help="burst_seconds (default 1.0)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)

    per_process = run_fleet(
        args.redis_url,
        rpm=args.rpm,
        seconds=args.seconds,
        procs=args.procs,
        burst_seconds=args.burst,
    )
    times = sorted(t for grants in per_process for t in grants)
    window = min(60.0, args.seconds)
    allowed_run = args.rpm * args.seconds / 60
    allowed_window = args.rpm * window / 60
    busiest = max_in_window(times, window)
    overshoot = (busiest - allowed_window) / allowed_window * 100
    burst_bound = args.burst / window * 100

    print(f"limit           {args.rpm} requests/min, burst {args.burst:g} s, "
          f"{args.procs} processes, {args.seconds:g} s")
    print(f"granted         {len(times)} (per process: {[len(g) for g in per_process]})")
    print(f"allowed by limit over the run  {allowed_run:g}")
    print(f"busiest {window:g} s window  {busiest} vs limit {allowed_window:g}")
    print(f"overshoot       {overshoot:+.2f}% (target < {TARGET_OVERSHOOT_PCT:g}%; "
          f"burst bound for this window {burst_bound:.2f}%)")


if __name__ == "__main__":
    main()
