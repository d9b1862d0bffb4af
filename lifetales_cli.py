"""``lifetales``: run the platform (API + worker + beat), migrate, and other operator commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from config import DEFAULT_CONCURRENCY, env_int, var_dir_from_env

QUEUES = "transcription,illustration,story,batch,maintenance"


def migrate() -> None:
    """Bring the database schema to the latest revision (the only way it is created)."""
    from alembic import command

    from config import Settings
    from migrations import alembic_config

    command.upgrade(alembic_config(Settings.from_env().database_url), "head")


def _platform_commands(port: int, concurrency: int, with_worker: bool) -> list[list[str]]:
    bin_dir = Path(sys.executable).parent
    commands = [
        [
            str(bin_dir / "gunicorn"),
            "api:create_app()",
            "--config",
            "python:gunicorn_conf",  # JSON logs, metrics across gunicorn workers
            "--bind",
            f"0.0.0.0:{port}",
            # Threads: Prefer: wait=N and polling clients hold a request open, not a process.
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            "32",
            "--timeout",
            "120",
            "--graceful-timeout",
            "10",
        ]
    ]
    if with_worker:
        commands.append(
            [
                str(bin_dir / "celery"),
                "-A",
                "workers.app",
                "worker",
                "--beat",
                "--queues",
                QUEUES,
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ]
        )
    return commands


def run(port: int, concurrency: int, with_worker: bool) -> int:
    """Migrate, then run the API and a worker (with embedded beat) until one of them stops."""
    from config import Settings

    settings = Settings.from_env()
    var_dir = var_dir_from_env(os.environ)
    var_dir.mkdir(parents=True, exist_ok=True)
    migrate()
    mode = "gemini" if settings.agents.gemini_api_key else "offline (no GEMINI_API_KEY)"
    print(
        f"lifetales: database={settings.database_url.split(':', 1)[0]} "
        f"broker={settings.broker_url.split(':', 1)[0]} provider={mode} "
        f"media={'cloudinary' if settings.cloudinary_url else settings.media_dir}",
        flush=True,
    )
    print(f"lifetales: API on http://localhost:{port}/api/v1 (docs: /api/docs)", flush=True)
    env = {**os.environ, "PORT": str(port), "LIFETALES_VAR_DIR": str(var_dir)}
    children = [
        subprocess.Popen(cmd, env=env)  # noqa: S603 - our own gunicorn/celery
        for cmd in _platform_commands(port, concurrency, with_worker)
    ]

    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                code = child.returncode or 1
                stopping = True
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return code


def usage(window: str, as_json: bool) -> int:
    """Print calls, tokens and estimated cost by agent and model from the job records."""
    from config import Settings
    from models.db import make_engine, make_session_factory
    from workers.usage import format_table, parse_since, total, total_cost_usd, usage_since

    since = datetime.now(UTC) - parse_since(window)
    engine = make_engine(Settings.from_env().database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = usage_since(session, since)
    finally:
        engine.dispose()
    if not as_json:
        print(format_table(rows, since, window))
        return 0
    summed = total(rows)
    report = {
        "since": since.isoformat(),
        "rows": [{**vars(row), "cost_usd": row.cost_usd} for row in rows],
        "total": {**vars(summed), "cost_usd": total_cost_usd(rows)},
    }
    print(json.dumps(report, indent=2))
    return 0


def promote(email: str) -> int:
    """Give the account with this email the admin role (its tokens keep working)."""
    from sqlalchemy import func, update

    from config import Settings
    from models import User
    from models.db import make_engine

    engine = make_engine(Settings.from_env().database_url)
    try:
        with engine.begin() as conn:
            found = conn.execute(
                update(User).where(func.lower(User.email) == email.strip().lower())
                .values(role="admin")
            ).rowcount
    finally:
        engine.dispose()
    if not found:
        print(f"lifetales: no account with email {email}", file=sys.stderr)
        return 1
    print(f"lifetales: {email} is now an admin")
    return 0


def main(argv: list[str] | None = None) -> int:
    from config import ObservabilitySettings
    from telemetry import configure_logging

    configure_logging("cli", ObservabilitySettings.from_env(os.environ).log_level, os.environ)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # start-up noise
    parser = argparse.ArgumentParser(prog="lifetales", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="migrate, then run the API, a worker and beat")
    run_p.add_argument("--port", type=int, default=env_int(os.environ, "PORT", 3000))
    concurrency = env_int(os.environ, "CELERY_CONCURRENCY", DEFAULT_CONCURRENCY)
    run_p.add_argument("--concurrency", type=int, default=concurrency)
    run_p.add_argument("--no-worker", action="store_true", help="run the API only")
    sub.add_parser("migrate", help="alembic upgrade head")
    usage_p = sub.add_parser("usage", help="model calls, tokens and estimated cost from the jobs")
    usage_p.add_argument("--since", default="7d", help="window: 30m, 24h, 7d... (default 7d)")
    usage_p.add_argument("--json", action="store_true", help="machine-readable output")
    users_p = sub.add_parser("users", help="account administration")
    users_sub = users_p.add_subparsers(dest="users_command", required=True)
    promote_p = users_sub.add_parser("promote", help="give an account the admin role")
    promote_p.add_argument("email")
    args = parser.parse_args(argv)
    if args.command == "users":
        return promote(args.email)
    if args.command == "migrate":
        migrate()
        return 0
    if args.command == "usage":
        from workers.usage import parse_since

        try:
            parse_since(args.since)
        except ValueError as exc:
            parser.error(str(exc))
        return usage(args.since, args.json)
    return run(args.port, args.concurrency, not args.no_worker)


if __name__ == "__main__":
    sys.exit(main())
