"""The deployment files agree with each other and with the code.

There is no Docker engine where the tests run, so nothing is built: the Procfile, the Dockerfile,
``.env.example``, ``docker-compose.yml`` and ``deploy/prometheus.yml`` are parsed and compared.
The compose and Prometheus checks need PyYAML and are skipped (with the reason) without it.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("api", "workers", "agents", "models", "migrations")
WORKER_CONCURRENCY = {
    "transcription": 32, "illustration": 16, "story": 16, "speech": 16, "render": 1, "video": 16,
    "batch": 4,
    "webhooks": 16,
}

# How the code reads its environment: `_get(env, "NAME"`, `_text(env, "NAME"`,
# `env.get("NAME"`, `os.environ.get("NAME"`, `os.environ["NAME"]`, `os.getenv("NAME"`, and
# constants such as `BASE_URL_ENV = "NAME"` that are handed to one of those.
ENV_READ_PATTERNS = (
    re.compile(r"\b\w+\(\s*env\s*,\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\benv_int\(\s*(?:os\.)?environ\s*,\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\b(?:env|environ)\.get\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\b(?:env|environ)\[\s*[\"']([A-Z][A-Z0-9_]*)[\"']\s*\]"),
    re.compile(r"\bos\.getenv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(
        r"^\s*[A-Z0-9_]*ENV[A-Z0-9_]*\s*(?::\s*\w+\s*)?=\s*[\"']([A-Z][A-Z0-9_]*)[\"']", re.M
    ),
)
# `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME:?message}`; `$$NAME` is Compose's escape for a
# variable the container's shell expands, so it counts as well.
SHELL_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


# --- parsing ---------------------------------------------------------------------------------


def _procfile() -> dict[str, str]:
    processes: dict[str, str] = {}
    for number, line in enumerate((ROOT / "Procfile").read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[A-Za-z0-9_]+", name), f"Procfile line {number}: {line!r}"
        assert name not in processes, f"Procfile: process {name!r} defined twice"
        processes[name] = command.strip()
    return processes


def _env_example() -> dict[str, str]:
    """Variables of .env.example, each of which must have a comment on the line above it."""
    names: dict[str, str] = {}
    previous = ""
    for number, line in enumerate((ROOT / ".env.example").read_text().splitlines(), 1):
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
        if match:
            name = match.group(1)
            assert name not in names, f".env.example: {name} listed twice"
            assert previous.startswith("# ") and len(previous) > 10, (
                f".env.example line {number}: {name} needs a one-line comment above it"
            )
            names[name] = match.group(2)
        else:
            assert not line.strip() or line.startswith("#"), f".env.example line {number}: {line!r}"
        previous = line
    return names


def _source_files() -> Iterator[Path]:
    yield from sorted(ROOT.glob("*.py"))
    for package in PACKAGE_DIRS:
        yield from sorted((ROOT / package).rglob("*.py"))


def _env_vars_read_by_code() -> dict[str, str]:
    """Every variable name the application code reads from the environment -> first file."""
    found: dict[str, str] = {}
    for path in _source_files():
        text = path.read_text()
        for pattern in ENV_READ_PATTERNS:
            for name in pattern.findall(text):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def _shell_vars(text: str) -> set[str]:
    return set(SHELL_VAR.findall(text))


def _option(command: str, flag: str) -> str | None:
    args = shlex.split(command)
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _celery_workers() -> dict[str, str]:
    worker = re.compile(r"\bcelery\b.*\bworker\b")
    return {name: cmd for name, cmd in _procfile().items() if worker.search(cmd)}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def _compose_command(service: dict[str, Any]) -> str | None:
    """The command a service runs, spelled as in the Procfile: `sh -c "exec ..."` unwrapped and
    Compose's `$$` escape turned back into `$`."""
    command = service.get("command")
    if command is None:
        return None
    if isinstance(command, list):
        if len(command) == 3 and command[0] in ("sh", "/bin/sh") and command[1] == "-c":
            command = command[2]
        else:
            command = shlex.join(str(part) for part in command)
    command = str(command).replace("$$", "$").strip()
    return command.removeprefix("exec ").strip()


def _as_dict(value: Any) -> dict[str, Any]:
    """Compose accepts `environment`/`depends_on` as a mapping or a list."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    result: dict[str, Any] = {}
    for item in value:
        key, _, val = str(item).partition("=")
        result[key] = val or None
    return result


@pytest.fixture(scope="module")
def yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML is not installed: compose file not parsed")


@pytest.fixture(scope="module")
def compose(yaml: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services built from this repository's Dockerfile."""
    return {name: svc for name, svc in services.items() if "build" in svc}


# --- Procfile --------------------------------------------------------------------------------


def test_procfile_has_every_process() -> None:
    processes = _procfile()
    expected = {"release", "web", "beat", "flower"} | {f"worker_{q}" for q in WORKER_CONCURRENCY}
    assert expected <= set(processes), f"missing: {sorted(expected - set(processes))}"


def test_release_runs_the_migrations(tmp_path: Path) -> None:
    release = _procfile()["release"]
    assert release == "lifetales migrate", release
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["lifetales"] == "lifetales_cli:main"
    # Run it, from a directory that is not the checkout, and look at the schema it made.
    database = tmp_path / "release.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}",
           "LIFETALES_VAR_DIR": str(tmp_path / "var")}
    lifetales = Path(sys.executable).parent / "lifetales"
    subprocess.run([str(lifetales), "migrate"], cwd=tmp_path, env=env, check=True, timeout=120)
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"users", "spaces", "notes", "media", "stories", "chapters", "jobs"} <= tables


def test_web_runs_gunicorn_fit_for_long_polling() -> None:
    web = _procfile()["web"]
    assert web.startswith("gunicorn 'api:create_app()'")
    assert _option(web, "--bind") == "0.0.0.0:$PORT"
    # Threads, not sync workers: Prefer: wait and SSE hold a request open.
    assert _option(web, "--worker-class") == "gthread"
    assert int(_option(web, "--threads") or 0) >= 8
    assert int(_option(web, "--timeout") or 0) >= 60


def test_workers_cover_every_celery_queue_once() -> None:
    from celeryconfig import task_queues

    declared = {queue.name for queue in task_queues}
    served: list[str] = []
    hostnames: list[str] = []
    for name, command in _celery_workers().items():
        assert command.startswith("celery -A workers.app worker "), name
        assert _option(command, "--pool") == "threads", f"{name}: I/O-bound work runs on threads"
        assert "--without-mingle" in command and "--without-gossip" in command, name
        queues = (_option(command, "--queues") or _option(command, "-Q") or "").split(",")
        served += queues
        hostnames.append(_option(command, "--hostname") or "")
        assert name == f"worker_{queues[0]}", f"{name} should be named after its first queue"
        assert _option(command, "--concurrency") == str(WORKER_CONCURRENCY[queues[0]]), name
    assert sorted(served) == sorted(declared), "each celeryconfig queue has exactly one worker"
    assert len(set(hostnames)) == len(hostnames) and all("@%h" in h for h in hostnames)
    # The reaper must not wait behind a batch's minutes-long story jobs.
    assert "maintenance" in (_option(_procfile()["worker_webhooks"], "--queues") or "").split(",")


def test_lifetales_run_serves_every_celery_queue() -> None:
    """``make run`` (``lifetales run``) must not leave a queue without a worker."""
    from celeryconfig import QUEUE_NAMES
    from lifetales_cli import _platform_commands

    served: list[str] = []
    for command in _platform_commands(3000, 8, with_worker=True)[1:]:
        served += (_option(shlex.join(command), "--queues") or "").split(",")
    assert sorted(served) == sorted(QUEUE_NAMES)


def test_beat_and_flower() -> None:
    processes = _procfile()
    assert processes["beat"].startswith("celery -A workers.app beat")
    flower = processes["flower"]
    assert flower.startswith("celery -A workers.app flower")
    assert _option(flower, "--basic-auth") == "$FLOWER_BASIC_AUTH"
    assert _option(flower, "--port") == "$FLOWER_PORT"
    # Not public unless someone asks for it.
    assert _option(flower, "--address") in ("127.0.0.1", "${FLOWER_ADDRESS:-127.0.0.1}")


# --- .env.example ----------------------------------------------------------------------------


def test_env_example_lists_every_variable_the_code_reads() -> None:
    read = _env_vars_read_by_code()
    # The scan itself must keep working: these are read today.
    assert {"DATABASE_URL", "SECRET_KEY", "GEMINI_API_KEY", "GEMINI_TIMEOUT_STORY_MS",
            "CELERY_CONCURRENCY", "GOOGLE_GEMINI_BASE_URL"} <= set(read), sorted(read)
    listed = _env_example()
    missing = {name: where for name, where in read.items() if name not in listed}
    assert not missing, f"read by the code but not in .env.example: {missing}"


def test_env_example_lists_the_procfile_variables_and_announced_ones() -> None:
    listed = _env_example()
    for name, command in _procfile().items():
        missing = _shell_vars(command) - set(listed)
        assert not missing, f"Procfile {name} uses {sorted(missing)}, not in .env.example"
    announced = {"CORS_ORIGINS", "SENTRY_DSN", "FLOWER_BASIC_AUTH", "FLOWER_PORT",
                 "CELERY_CONCURRENCY", "LIFETALES_VAR_DIR", "REAPER_INTERVAL_SECONDS",
                 "WEB_CONCURRENCY", "JWT_SECRET"}
    assert announced <= set(listed), sorted(announced - set(listed))


def test_env_example_leaves_secrets_blank() -> None:
    listed = _env_example()
    for name in ("SECRET_KEY", "JWT_SECRET", "GEMINI_API_KEY", "CLOUDINARY_URL",
                 "FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS", "SENTRY_DSN"):
        assert listed.get(name) == "", f"{name} must be blank in .env.example"
    # Read with int()/float() and no empty-means-unset: an empty value would crash at start.
    for name in ("PORT", "WEB_CONCURRENCY", "CELERY_CONCURRENCY", "REAPER_INTERVAL_SECONDS",
                 "FLOWER_PORT"):
        assert re.fullmatch(r"\d+(\.\d+)?", listed.get(name, "")), f"{name} must be a number"


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_installs_and_copies_the_app() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copied: set[str] = set()
    for keyword, args in instructions:
        if keyword == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            copied |= {p.rstrip("/").removeprefix("./") for p in parts[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    modules = {f"{m}.py" for m in pyproject["tool"]["setuptools"]["py-modules"]}
    required = {d for d in PACKAGE_DIRS if (ROOT / d).is_dir()} | {"alembic.ini", "pyproject.toml"}
    required |= modules
    assert required <= copied, f"not copied into the image: {sorted(required - copied)}"
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert re.search(r"pip install (--no-deps )?\.", runs), "the project is pip-installed"


def test_dockerfile_runs_as_non_root_and_defaults_to_web() -> None:
    instructions = _dockerfile_instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert ("EXPOSE", "3000") in instructions
    cmds = [args for keyword, args in instructions if keyword == "CMD"]
    assert cmds, "no default CMD"
    assert cmds[-1].removeprefix("exec ") == _procfile()["web"]


# --- docker-compose.yml ----------------------------------------------------------------------


def test_every_procfile_process_runs_in_compose(services: dict[str, dict[str, Any]]) -> None:
    by_command: dict[str, list[str]] = {}
    for name, service in services.items():
        command = _compose_command(service)
        if command is not None:
            by_command.setdefault(command, []).append(name)
    for process, command in _procfile().items():
        assert command in by_command, (
            f"no compose service runs the Procfile's {process}: {command!r}"
        )
    # The release step is the `migrate` service, the web process the `api` service, and each
    # other process has the service of the same name.
    expected = {"release": "migrate", "web": "api"}
    for process, command in _procfile().items():
        assert expected.get(process, process) in by_command[command], process


def test_compose_app_services_share_env_and_point_at_compose_services(
    services: dict[str, dict[str, Any]],
) -> None:
    apps = _app_services(services)
    assert {"migrate", "api", "beat", "flower"} <= set(apps)
    for name, service in apps.items():
        env_files = service.get("env_file")
        env_files = [env_files] if isinstance(env_files, str | dict) else env_files or []
        paths = [f["path"] if isinstance(f, dict) else f for f in env_files]
        assert ".env" in paths, f"{name}: env_file .env"
        env = _as_dict(service.get("environment"))
        assert urlsplit(str(env.get("DATABASE_URL"))).hostname == "postgres", name
        broker = urlsplit(str(env.get("CELERY_BROKER_URL")))
        assert (broker.scheme, broker.hostname) == ("amqp", "rabbitmq"), name
        assert urlsplit(str(env.get("REDIS_URL"))).hostname == "redis", name
        assert any(str(v).split(":")[0] == "media" for v in service.get("volumes", [])), name


def test_compose_variables_are_in_env_example(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    listed = set(_env_example())
    text = "\n".join(
        line for line in (ROOT / "docker-compose.yml").read_text().splitlines()
        if not line.lstrip().startswith("#")
    )
    referenced = _shell_vars(text)
    for service in services.values():
        referenced |= set(_as_dict(service.get("environment")))
    missing = referenced - listed
    assert not missing, f"used by docker-compose.yml but not in .env.example: {sorted(missing)}"


def test_compose_worker_pools_match_their_concurrency(
    services: dict[str, dict[str, Any]],
) -> None:
    # celeryconfig sizes broker and database pools from CELERY_CONCURRENCY, not from the flag.
    for name in _celery_workers():
        service = services[name]
        command = _compose_command(service) or ""
        env = _as_dict(service.get("environment"))
        assert str(env.get("CELERY_CONCURRENCY")) == _option(command, "--concurrency"), name


def test_compose_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres, redis = services["postgres"], services["redis"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert str(redis["image"]).startswith("redis:7")
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    volumes = set(compose.get("volumes") or {})
    assert "media" in volumes
    postgres_volumes = [str(v).split(":")[0] for v in postgres.get("volumes", [])]
    assert any(v in volumes for v in postgres_volumes), "postgres data on a named volume"
    # The broker keeps its quorum queues on a named volume, under a fixed node name.
    rabbitmq = services["rabbitmq"]
    assert str(rabbitmq["image"]).startswith("rabbitmq:4")
    assert rabbitmq.get("hostname") == "rabbitmq"
    assert "rabbitmq-diagnostics" in " ".join(rabbitmq["healthcheck"]["test"])
    rabbitmq_volumes = [str(v).split(":") for v in rabbitmq.get("volumes", [])]
    assert [v for v in rabbitmq_volumes if v[0] in volumes and v[1] == "/var/lib/rabbitmq"]
    for port in rabbitmq.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"rabbitmq published beyond localhost: {port}"
    app_env = _as_dict(services["api"].get("environment"))
    rabbitmq_env = _as_dict(rabbitmq.get("environment"))
    credentials = f"{rabbitmq_env['RABBITMQ_DEFAULT_USER']}:{rabbitmq_env['RABBITMQ_DEFAULT_PASS']}"
    assert app_env["CELERY_BROKER_URL"] == f"amqp://{credentials}@rabbitmq:5672/"
    assert _as_dict(services["migrate"]["depends_on"])["postgres"] == {
        "condition": "service_healthy"
    }


def test_compose_api(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    depends = _as_dict(api["depends_on"])
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert depends["redis"] == {"condition": "service_healthy"}
    assert depends["rabbitmq"] == {"condition": "service_healthy"}
    assert any(str(p).endswith("3000:3000") for p in api["ports"])
    assert "/health" in " ".join(api["healthcheck"]["test"])
    for name in _celery_workers():
        depends = _as_dict(services[name]["depends_on"])
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["rabbitmq"] == {"condition": "service_healthy"}


def test_compose_ops_ports_are_not_public(services: dict[str, dict[str, Any]]) -> None:
    for name in ("flower", "prometheus"):
        for port in services[name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} published beyond localhost: {port}"
    assert any(str(p).endswith(":5555") for p in services["flower"]["ports"])


def test_prometheus_scrapes_the_api(yaml: Any, services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert str(prometheus["image"]).startswith("prom/prometheus")
    mounts = [str(v) for v in prometheus.get("volumes", [])]
    assert any(m.startswith("./deploy/prometheus.yml:") for m in mounts)
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        (job.get("metrics_path", "/metrics"), target)
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert ("/metrics", "api:3000") in targets
