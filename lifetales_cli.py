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
from typing import TYPE_CHECKING, Any

from config import DEFAULT_CONCURRENCY, env_int, var_dir_from_env

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session

# ``video``: narrator clips; their tasks are short (a start, a look, storing the clip) and the
# minutes of generation in between hold no thread, so the main worker serves them too.
QUEUES = "transcription,illustration,story,speech,video,maintenance,webhooks"
# Batch regenerations run in a worker process of their own with a few threads (as the Procfile's
# worker_batch): however long the batch, it never holds the threads (or the GIL) that users'
# transcriptions need.
BATCH_QUEUES = "batch"
BATCH_CONCURRENCY = 4
# Film renders are CPU-bound (ffmpeg): a worker process of their own, RENDER_CONCURRENCY (1)
# films at a time, so a render never starves the I/O queues' threads.
RENDER_QUEUES = "render"


def migrate() -> None:
    """Bring the database schema to the latest revision (the only way it is created)."""
    from alembic import command

    from config import Settings
    from migrations import alembic_config

    command.upgrade(alembic_config(Settings.from_env().database_url), "head")


def api_workers() -> int:
    """API processes: ``WEB_CONCURRENCY`` (as the Procfile), else 2 when Redis holds the rate
    limits and job notifications all processes share, else 1 (the embedded default keeps
    rate-limit counters in process memory, which two processes would each count apart)."""
    from config import env_int

    default = 2 if os.environ.get("REDIS_URL", "").strip() else 1
    return max(1, env_int(os.environ, "WEB_CONCURRENCY", default))


def _platform_commands(port: int, concurrency: int, with_worker: bool,
                       render_concurrency: int = 1) -> list[list[str]]:
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
            str(api_workers()),
            "--threads",
            "32",
            "--timeout",
            "120",
            "--graceful-timeout",
            "10",
        ]
    ]
    if with_worker:
        # The main worker runs beat too; batches get a worker of their own (see BATCH_QUEUES).
        commands.append(_worker_command(bin_dir, QUEUES, concurrency, "--beat"))
        commands.append(_worker_command(bin_dir, BATCH_QUEUES, BATCH_CONCURRENCY,
                                        "--hostname", "batch@%h"))
        commands.append(_worker_command(bin_dir, RENDER_QUEUES, render_concurrency,
                                        "--hostname", "render@%h"))
    return commands


def _worker_command(bin_dir: Path, queues: str, concurrency: int, *extra: str) -> list[str]:
    return [str(bin_dir / "celery"), "-A", "workers.app", "worker", *extra, "--queues", queues,
            "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--without-mingle", "--without-gossip"]


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
        for cmd in _platform_commands(port, concurrency, with_worker,
                                      settings.film.render_concurrency)
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


def regenerate_stories(args: argparse.Namespace) -> int:
    """Create a batch regeneration (as ``POST /batches/story-regenerations`` does), owned by
    the ``--as`` admin or else the first admin account, then follow it to the end."""
    from marshmallow import ValidationError
    from sqlalchemy import func, select

    from api.schemas.base import camelcase
    from api.schemas.batches import StoryRegenerationRequestSchema
    from config import Settings
    from models import User
    from models.db import make_engine, make_session_factory
    from workers.batch import count_targets, create_batch, estimate_batch, frozen_selection
    from workers.sending import install_enqueue_after_commit

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    install_enqueue_after_commit(factory)
    try:
        with factory() as session:

            def user_id(email: str) -> str | None:
                found = session.scalar(select(User.id).where(
                    func.lower(User.email) == email.strip().lower()))
                return None if found is None else str(found)

            body: dict[str, object] = {"force": args.force}
            if args.all:
                body["all"] = True
            elif args.space:
                body["spaceIds"] = args.space
            elif (owner := user_id(args.user)) is not None:
                body["userId"] = owner
            else:
                return _fail(f"no account with email {args.user}")
            try:
                body["settings"] = json.loads(args.settings) if args.settings else None
                data = StoryRegenerationRequestSchema().load(body)
            except (ValueError, ValidationError) as exc:
                return _fail(f"invalid request: {exc}")
            admins = select(User).where(User.role == "admin").order_by(User.created_at)
            if args.as_email:
                admins = admins.where(func.lower(User.email) == args.as_email.strip().lower())
            admin = session.scalars(admins.limit(1)).first()
            if admin is None:
                return _fail("no admin account" + (f" {args.as_email}" if args.as_email else "")
                             + "; make one with: lifetales users promote EMAIL")
            selection = frozen_selection(data)
            overrides = {camelcase(k): v for k, v in (data.get("settings") or {}).items()}
            if args.dry_run:
                estimate = estimate_batch(session, selection, overrides, settings.agents)
                print(f"dry run: {estimate.spaces} stories, {estimate.gemini_calls} Gemini calls "
                      f"({estimate.story_calls} story, {estimate.illustration_calls} "
                      f"illustration), estimated cost {estimate.cost_usd:.4f} USD at list "
                      f"prices (an upper bound: cached answers cost nothing)")
                return 0
            targets = count_targets(session, selection)
            if not targets:
                return _fail("no space with moments matches the selection")
            batch = create_batch(session, owner_id=admin.id, selection=selection,
                                 overrides=overrides, force=data["force"], targets=targets)
            session.commit()
            print(batch.id, flush=True)
            print(f"lifetales: batch {batch.id}: {targets} stories, owned by {admin.email}; "
                  f"GET /api/v1/batches/{batch.id}", file=sys.stderr, flush=True)
            if args.no_wait:
                return 0
            return follow_batch(session, batch.id, args.interval)
    finally:
        engine.dispose()


def follow_batch(session: Session, batch_id: uuid.UUID, interval: float) -> int:
    """Show the batch's progress on stderr until it finishes: a bar redrawn in place on a
    terminal, a line per change otherwise. 0 when every story was regenerated."""
    from models import TERMINAL_STATUSES, Job
    from workers.batch import batch_report

    tty = sys.stderr.isatty()
    last = ""
    try:
        while True:
            session.expire_all()
            batch = session.get(Job, batch_id)
            if batch is None:
                return _fail("the batch was deleted")
            report = batch_report(session, batch)
            session.commit()  # hand the connection back while sleeping
            line = _progress_line(batch.status, report)
            if tty:
                print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
            elif line.split(" ETA ")[0] != last.split(" ETA ")[0]:
                print(line, file=sys.stderr, flush=True)
            last = line
            if batch.status in TERMINAL_STATUSES:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        print(f"\nlifetales: detached; the batch goes on (GET /api/v1/batches/{batch_id})",
              file=sys.stderr)
        return 130
    if tty:
        print(file=sys.stderr)
    totals = report["totals"]
    print(f"lifetales: batch {batch.status}: {totals['succeeded']} regenerated, "
          f"{totals['failed']} failed, {totals['canceled']} canceled"
          + (f"; re-run the failures: POST /api/v1/batches/{batch_id}/retry-failed"
             if totals["failed"] else ""), file=sys.stderr)
    return 0 if batch.status == "succeeded" and not totals["failed"] else 1


def _progress_line(status: str, report: dict[str, Any]) -> str:
    totals = report["totals"]
    percent = report["percent_done"]
    filled = int(percent * 30 / 100)
    eta = report["estimated_seconds_remaining"]
    left = "?" if eta is None else f"{int(eta) // 60}m{int(eta) % 60:02d}s"
    return (f"[{'#' * filled}{'-' * (30 - filled)}] {percent:5.1f}% of {report['total']}  "
            f"ok {totals['succeeded']}  failed {totals['failed']}  running {totals['running']}  "
            f"queued {totals['queued']}  canceled {totals['canceled']}  "
            f"cost {report['cost_usd']:.4f} USD  {status} ETA {left}")


def models(as_json: bool) -> int:
    """Print each agent's model and fallbacks and what the Gemini API says about each; exit
    status 1 when an agent has no working model."""
    from agents.config import AgentSettings
    from agents.gemini import check_routes

    settings = AgentSettings.from_env(os.environ)
    if not settings.has_api_key:
        rows = [{"agent": r.agent, "model": r.model, "fallbacks": list(r.fallbacks),
                 "state": "offline"} for r in settings.routes]
        if as_json:
            print(json.dumps({"provider": "offline", "agents": rows}, indent=2))
        else:
            print("provider: offline (no GEMINI_API_KEY): every agent answers locally; "
                  "the models below are used once a key is set")
            for row in rows:
                print(f"  {row['agent']:<14} {row['model']}  fallbacks: "
                      f"{', '.join(row['fallbacks']) or '-'}")
        return 0
    statuses = check_routes(settings)
    report: list[dict[str, Any]] = [{
        "agent": status.route.agent,
        "setting": status.route.setting,
        "state": status.state,
        "answering": status.answering,
        "models": [{
            "model": model,
            "role": "model" if model == status.route.model else "fallback",
            "found": None if check is None else check.found,
            "inputTokenLimit": check.input_token_limit if check else None,
            "outputTokenLimit": check.output_token_limit if check else None,
            "supportedMethods": list(check.supported_actions) if check else [],
            "detail": check.detail if check else None,
        } for model, check in zip(status.route.chain, status.checks, strict=True)],
    } for status in statuses]
    if as_json:
        print(json.dumps({"provider": "gemini", "agents": report}, indent=2))
    else:
        for agent in report:
            print(f"{agent['agent']} ({agent['setting']}): {agent['state'].upper()}"
                  f"{'' if agent['answering'] is None else ', answered by ' + agent['answering']}")
            for m in agent["models"]:
                found = {True: "found", False: "NOT FOUND", None: "unknown"}[m["found"]]
                limits = (f"in {m['inputTokenLimit']:,} / out {m['outputTokenLimit']:,} tokens"
                          if m["found"] else (m["detail"] or ""))
                methods = ", ".join(m["supportedMethods"])
                print(f"  {m['role']:<8} {m['model']:<28} {found:<9} {limits}"
                      f"{'  methods: ' + methods if methods else ''}")
    broken = [a["agent"] for a in report if a["state"] == "unavailable"]
    if broken:
        return _fail(f"no working model for: {', '.join(broken)} (set GEMINI_MODEL_<AGENT> or "
                     "GEMINI_FALLBACK_MODELS_<AGENT>)")
    return 0


def _fail(message: str) -> int:
    print(f"lifetales: {message}", file=sys.stderr)
    return 1


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
    models_p = sub.add_parser(
        "models", help="each agent's Gemini model and fallbacks, as the API sees them now")
    models_p.add_argument("--json", action="store_true", help="machine-readable output")
    users_p = sub.add_parser("users", help="account administration")
    users_sub = users_p.add_subparsers(dest="users_command", required=True)
    promote_p = users_sub.add_parser("promote", help="give an account the admin role")
    promote_p.add_argument("email")
    stories_p = sub.add_parser("stories", help="story administration")
    stories_sub = stories_p.add_subparsers(dest="stories_command", required=True)
    regen_p = stories_sub.add_parser(
        "regenerate", help="regenerate many stories as one batch (each a new story version)")
    which = regen_p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every space with moments")
    which.add_argument("--space", nargs="+", action="extend", metavar="ID", help="these spaces")
    which.add_argument("--user", metavar="EMAIL", help="every space of this account")
    regen_p.add_argument("--settings", metavar="JSON",
                         help='StorySettings overrides, e.g. \'{"narrativeTone": "poetic"}\'')
    regen_p.add_argument("--force", action="store_true", help="bypass the story cache")
    regen_p.add_argument("--dry-run", action="store_true",
                         help="print the count and estimated calls and cost; create nothing")
    regen_p.add_argument("--no-wait", action="store_true",
                         help="print the batch id and exit instead of following it")
    regen_p.add_argument("--as", dest="as_email", metavar="EMAIL",
                         help="the admin who owns the batch (default: the first admin)")
    regen_p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "users":
        return promote(args.email)
    if args.command == "stories":
        return regenerate_stories(args)
    if args.command == "migrate":
        migrate()
        return 0
    if args.command == "models":
        return models(args.json)
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
