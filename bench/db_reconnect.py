"""What noticing a dead pooled connection costs, and whether the first query after a PostgreSQL
crash-restart succeeds, for three ways of checking connections out of the pool:

- ``none``: no check (a connection the server cut fails the query that uses it);
- ``poll``: ours (models/db.py): a ``poll()`` for input on the idle connection, a ping only
  when the server sent something (it hung up) or the connection sat idle 5 s;
- ``pre-ping``: SQLAlchemy's ``pool_pre_ping``, a ``SELECT 1`` round trip on every checkout.

    .venv/bin/python bench/db_reconnect.py --checkouts 20000 --restarts 5

Runs on a private cluster (initdb on a free port, crashed with ``pg_ctl stop -m immediate``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as bench/...

from sqlalchemy import Engine, create_engine, text

from models.db import make_engine, normalize_database_url
from tests.pg_cluster import PostgresCluster

STRATEGIES: dict[str, Callable[[str], Engine]] = {
    "none": lambda url: create_engine(normalize_database_url(url), pool_size=2),
    "poll": lambda url: make_engine(url, pool_size=2),
    "pre-ping": lambda url: create_engine(normalize_database_url(url), pool_size=2,
                                          pool_pre_ping=True),
}


ROUNDS = 5


def checkout_cost_us(engines: dict[str, Engine], checkouts: int) -> dict[str, tuple[float, float]]:
    """Per strategy, (wall, CPU) microseconds per checkout + one trivial query (the connection
    reused at once, as a busy worker does): the best of ``ROUNDS`` rounds, the strategies
    taking turns, so that load from elsewhere on the box weighs on each alike."""
    best: dict[str, tuple[float, float]] = {}
    per_round = max(1, checkouts // ROUNDS)
    for _ in range(ROUNDS):
        for name, engine in engines.items():
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            figure = ((time.perf_counter() - wall) / per_round * 1e6,
                      (time.process_time() - cpu) / per_round * 1e6)
            best[name] = min(best.get(name, figure), figure)
    return best


def first_query_after_restart(cluster: PostgresCluster, engine: Engine) -> tuple[bool, float]:
    """Use a pooled connection, crash-restart the server, query at once: (ok, ms)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    cluster.restart(downtime_s=0.2)
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        ok = True
    except Exception:  # a cut connection: what this bench counts
        ok = False
    return ok, (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--checkouts", type=int, default=20000)
    parser.add_argument("--restarts", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} (2-core box: figures are noisy above ~2)")
    with PostgresCluster() as cluster:
        url = cluster.url()
        print(f"{'strategy':<10} {'checkout+SELECT 1 wall':>24} {'CPU':>10}   "
              f"first query after a crash-restart")
        engines = {name: build(url) for name, build in STRATEGIES.items()}
        costs = checkout_cost_us(engines, args.checkouts)
        for name, engine in engines.items():
            wall, cpu = costs[name]
            outcomes = [first_query_after_restart(cluster, engine) for _ in range(args.restarts)]
            engine.dispose()
            ok = sum(success for success, _ in outcomes)
            slowest = max(ms for _, ms in outcomes)
            print(f"{name:<10} {wall:>21.1f} us {cpu:>7.1f} us   {ok}/{len(outcomes)} "
                  f"succeeded (slowest {slowest:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
