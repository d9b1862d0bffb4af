"""Chaos run: N jobs against real PostgreSQL + Redis and several worker processes, while workers
are SIGKILLed at random moments, Redis restarts and PostgreSQL crash-restarts; then what the
database says happened.

    .venv/bin/python bench/chaos.py --jobs 1000 --kills 5 --redis-restarts 1 --pg-restarts 1
    .venv/bin/python bench/chaos.py --jobs 1000 --kills 0 --redis-restarts 0 --pg-restarts 3
    .venv/bin/python bench/chaos.py --jobs 1000 --kills 0 --redis-restarts 0 --pg-restarts 0 \
        --fault-rate 0.3
    .venv/bin/python bench/chaos.py --broker amqp --broker-restarts 1 --redis-restarts 1

``--broker amqp`` puts Celery's messages on a private RabbitMQ node started here (Redis then
holds the shared state only); ``--broker-restarts`` crashes that node (SIGKILL) and starts it
again on the same data directory.

Everything runs on 127.0.0.1 and is started here: a throwaway PostgreSQL database (on a private
cluster, ``initdb`` on a free port, when PostgreSQL restarts: ``pg_ctl stop -m immediate``,
then started again), a private ``redis-server`` (no persistence, so a restart loses every queued
message), the fake Gemini in a thread, ``lifetales migrate``, the API (gunicorn gthread), W
workers and one ``celery beat``.
Kills and the Redis restart fire when a random share of the jobs is final, so they land mid-run
whatever the machine's speed. Logs stay under the printed directory; the database is dropped.
The exit status is 0 when every target line is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as bench/chaos.py

import redis
import requests
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from models import TERMINAL_STATUSES, Chapter, Job, Note, Story
from models.base import utcnow
from models.db import database_unavailable, make_engine
from tests.audio import wav_tone
from tests.conftest import create_database, drop_database  # also clears GEMINI_API_KEY & co.
from tests.fakes.gemini_server import NOTE_ID_LINE, FakeGemini, RecordedRequest
from tests.pg_cluster import PostgresCluster
from tests.platform import RedisServer, Services
from tests.rabbitmq import RabbitMQNode
from workers.job_mirror import LIVE_TTL_S
from workers.job_mirror import key as document_key
from workers.job_resource import render_job

WORKER_CONCURRENCY = 8
NOTES_PER_SPACE = 3
SUBMIT_ATTEMPTS = 6  # a client retries a refused submit with the same Idempotency-Key
SUBMIT_TIMEOUT_S = 30
POLL_S = 0.25
# Chaos fires when this share of the expected jobs is final (drawn uniformly in between).
CHAOS_WINDOW = (0.05, 0.8)
ILLUSTRATION_PROMPT = "Chaos illustration #{n:06d}: a lighthouse in a storm"


@dataclass(frozen=True)
class Options:
    jobs: int
    workers: int
    kills: int
    redis_restarts: int
    redis_downtime: float
    pg_restarts: int
    pg_downtime: float
    fault_rate: float
    latency: float
    upstream_timeout: float
    deadline: float
    reaper_interval: int
    heartbeat_timeout: int
    resend_after: int
    story_share: float
    transcription_share: float
    spaces: int
    clients: int
    seed: int | None
    keep_database: bool
    broker: str = "redis"
    broker_restarts: int = 0
    broker_downtime: float = 2.0

    @property
    def hang_seconds(self) -> float:
        return self.upstream_timeout + 5  # a hang outlives the client's timeout

    @property
    def target_recovery_s(self) -> float:
        return 2.0 * self.reaper_interval


@dataclass
class Fault:
    """One chaos event; ``ended`` is when the platform had its part back (Redis up again)."""

    what: str
    started: datetime
    ended: datetime
    final_share: float  # share of the jobs already final when it fired


@dataclass
class Submission:
    kind: str
    n: int
    job_id: uuid.UUID | None = None
    refused: str | None = None  # the last answer of a submit that never got a job
    audio_sha: str | None = None


@dataclass
class SubmitStats:
    retries: Counter[str] = field(default_factory=Counter)
    # Every refused submit (retried or not): "503 with Retry-After", "500 without", ...
    refusals: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def retry(self, reason: str) -> None:
        with self.lock:
            self.retries[reason] += 1

    def refused(self, response: requests.Response | None, error: str = "") -> None:
        if response is None:
            reason = f"no answer ({error})"
        else:
            has = "with" if response.headers.get("Retry-After", "").isdigit() else "without"
            reason = f"{response.status_code} {has} Retry-After"
        with self.lock:
            self.refusals[reason] += 1


def clock(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3] if moment else "-"


# --- the platform ---------------------------------------------------------------------------


@contextmanager
def throwaway_database(keep: bool) -> Iterator[str]:
    url = create_database("lt_chaos")
    try:
        yield url
    finally:
        if keep:
            print(f"kept database {url} (drop it when done)", flush=True)
        else:
            drop_database(url)
            print(f"dropped database {url.rsplit('/', 1)[1]}", flush=True)


@contextmanager
def private_cluster(keep: bool) -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the run's own, which it may crash: the shared server never."""
    cluster = PostgresCluster(max_connections=300).start()
    print(f"PostgreSQL cluster {cluster.dir} on port {cluster.port}", flush=True)
    try:
        yield cluster
    finally:
        if keep:
            print(f"kept the cluster running: {cluster.url('lt_chaos')} (data in "
                  f"{cluster.data_dir})", flush=True)
        else:
            cluster.destroy()


def platform_env(opts: Options, database_url: str, broker: str, gemini_url: str,
                 var_dir: Path, redis_url: str | None = None) -> dict[str, str]:
    timeout_ms = str(int(opts.upstream_timeout * 1000))
    return {
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker,
        "REDIS_URL": redis_url or broker,
        "SECRET_KEY": "chaos-" + uuid.uuid4().hex,
        "GEMINI_API_KEY": "chaos-fake-key",
        "GOOGLE_GEMINI_BASE_URL": gemini_url,
        "MEDIA_DIR": str(var_dir / "media"),
        "CELERY_CONCURRENCY": str(WORKER_CONCURRENCY),
        "REAPER_INTERVAL_SECONDS": str(opts.reaper_interval),
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": str(opts.heartbeat_timeout),
        "JOB_QUEUED_RESEND_AFTER_SECONDS": str(opts.resend_after),
        "GEMINI_TIMEOUT_TRANSCRIPTION_MS": timeout_ms,
        "GEMINI_TIMEOUT_STORY_MS": timeout_ms,
        "GEMINI_TIMEOUT_ILLUSTRATION_MS": timeout_ms,
        # The bench floods one user's submits on purpose: it measures jobs, not request limits.
        "RATE_LIMITS_ENABLED": "false",
    }


class Fleet:
    """The worker processes: SIGKILL one at random and start a fresh one in its place."""

    def __init__(self, services: Services, rng: random.Random) -> None:
        self.services = services
        self.rng = rng
        self.started = 0
        self.lock = threading.Lock()

    def start_one(self) -> str:
        with self.lock:
            self.started += 1
            name = f"worker-{self.started}"
        self.services.start_worker(name, concurrency=WORKER_CONCURRENCY)
        return name

    def live(self) -> list[str]:
        return sorted(n for n in self.services.processes if n.startswith("worker-"))

    def kill_one(self) -> str:
        name = self.rng.choice(self.live())
        pid = self.services.processes[name].pid
        self.services.kill(name)  # SIGKILL: no warm shutdown, no acks, no last heartbeat
        return f"SIGKILL {name} (pid {pid})"


def restart_redis(server: RedisServer, downtime: float) -> None:
    """SHUTDOWN NOSAVE, stay down ``downtime`` seconds, start again on the same port."""
    # A raw socket: redis-py reconnects (with backoff) when the server hangs up, as it must here.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"SHUTDOWN NOSAVE\r\n")
        with suppress(OSError):
            sock.recv(64)  # the server closes the connection once it is going down
    if server.process is not None:
        server.process.wait(timeout=10)
    server.stop()
    time.sleep(downtime)
    server.start()


@dataclass
class FirstRequest:
    """The first request after PostgreSQL came back: its answer and how long it took."""

    status: int | str
    ms: float


class PostgresRestarts:
    """Crash-restarts of the run's private cluster (``pg_ctl stop -m immediate``, down for a
    while, started again), each followed at once by a request that needs the database: it
    must succeed, not meet a pooled connection the crash cut."""

    def __init__(self, cluster: PostgresCluster, downtime: float, base_url: str) -> None:
        self.cluster = cluster
        self.downtime = downtime
        self.probe = requests.Session()
        self.probe_url = f"{base_url}/api/v1/jobs?limit=1"
        self.first_requests: list[FirstRequest] = []

    def authorize(self, token: str) -> None:
        self.probe.headers["Authorization"] = f"Bearer {token}"

    def restart(self, share: float) -> Fault:
        started = utcnow()
        print(f"  chaos {clock(started)}  PostgreSQL crash (pg_ctl stop -m immediate, "
              f"{share:.0%} of the jobs final)", flush=True)
        self.cluster.crash()
        time.sleep(self.downtime)
        self.cluster.start()
        ended = utcnow()
        before = time.perf_counter()
        try:
            status: int | str = self.probe.get(self.probe_url, timeout=SUBMIT_TIMEOUT_S).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        self.first_requests.append(FirstRequest(status, (time.perf_counter() - before) * 1000))
        down = (ended - started).total_seconds()
        print(f"  chaos {clock(ended)}  PostgreSQL up again (down {down:.1f} s); first request "
              f"{status} in {self.first_requests[-1].ms:.0f} ms", flush=True)
        return Fault(f"PostgreSQL crash-restart (down {down:.1f} s)", started, ended, share)


def restart_rabbitmq(node: RabbitMQNode, downtime: float) -> None:
    """Crash the broker node (SIGKILL), stay down ``downtime`` seconds, start it again on the
    same data directory: its quorum queues come back with what they held."""
    node.kill()
    time.sleep(downtime)
    node.start()


class ChaosMonkey(threading.Thread):
    """Fires the planned kills and Redis (and RabbitMQ) restarts as the run's progress crosses
    random points."""

    def __init__(self, opts: Options, fleet: Fleet, redis_server: RedisServer,
                 progress: Callable[[], float], rng: random.Random,
                 postgres: PostgresRestarts | None = None,
                 rabbitmq: RabbitMQNode | None = None) -> None:
        super().__init__(name="chaos", daemon=True)
        actions = ["kill"] * opts.kills + ["redis"] * opts.redis_restarts
        actions += ["postgres"] * opts.pg_restarts
        actions += ["rabbitmq"] * opts.broker_restarts
        self.plan = sorted((rng.uniform(*CHAOS_WINDOW), action) for action in actions)
        self.opts = opts
        self.fleet = fleet
        self.redis_server = redis_server
        self.postgres = postgres
        self.rabbitmq = rabbitmq
        self.progress = progress
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.firing = False  # a fault under way (the plan is empty during the last one)

    @property
    def done(self) -> bool:
        return not self.plan and not self.firing

    def run(self) -> None:
        while self.plan and not self.stopping.is_set():
            try:
                share = self.progress()
            except Exception as exc:
                if not database_unavailable(exc):  # a hiccup should not end the chaos
                    self.errors.append(f"progress query failed: {exc!r}")
                self.stopping.wait(POLL_S)  # away (restarting): look again
                continue
            if self.plan and share >= self.plan[0][0] and not self.stopping.is_set():
                self.firing = True
                _, action = self.plan.pop(0)
                try:
                    self.fire(action, share)
                except Exception as exc:
                    self.errors.append(f"{action} at {share:.0%} final failed: {exc!r}")
                finally:
                    self.firing = False
                continue  # the next one waits for its own threshold, measured afresh
            self.stopping.wait(POLL_S)

    def fire(self, action: str, share: float) -> None:
        started = utcnow()
        if action == "kill":
            what = self.fleet.kill_one()
            self.faults.append(Fault(what, started, started, share))
            print(f"  chaos {clock(started)}  {what} ({share:.0%} of the jobs final)", flush=True)
            replacement = self.fleet.start_one()
            print(f"  chaos {clock(utcnow())}  {replacement} started in its place", flush=True)
        elif action == "postgres":
            assert self.postgres is not None
            self.faults.append(self.postgres.restart(share))
        elif action == "rabbitmq":
            self.fire_rabbitmq_restart(started, share)
        else:
            print(f"  chaos {clock(started)}  Redis SHUTDOWN NOSAVE ({share:.0%} of the jobs "
                  "final)", flush=True)
            restart_redis(self.redis_server, self.opts.redis_downtime)
            ended = utcnow()
            down = (ended - started).total_seconds()
            self.faults.append(Fault(f"Redis restart (down {down:.1f} s)", started, ended, share))
            print(f"  chaos {clock(ended)}  Redis up again", flush=True)

    def fire_rabbitmq_restart(self, started: datetime, share: float) -> None:
        assert self.rabbitmq is not None
        print(f"  chaos {clock(started)}  RabbitMQ SIGKILL ({share:.0%} of the jobs final)",
              flush=True)
        restart_rabbitmq(self.rabbitmq, self.opts.broker_downtime)
        ended = utcnow()
        down = (ended - started).total_seconds()
        self.faults.append(Fault(f"RabbitMQ crash-restart (down {down:.1f} s)", started, ended,
                                 share))
        print(f"  chaos {clock(ended)}  RabbitMQ up again", flush=True)


# --- the client -----------------------------------------------------------------------------


class Submitter:
    """Submits jobs over HTTP as the frontend would, from several client threads."""

    def __init__(self, base_url: str, token: str, stats: SubmitStats) -> None:
        self.base = f"{base_url}/api/v1"
        self.token = token
        self.stats = stats
        self.run_id = uuid.uuid4().hex[:8]
        self.local = threading.local()

    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
            self.local.session = session
        return session

    def submit(self, item: Submission, spaces: list[str]) -> Submission:
        if item.kind == "illustration":
            path, body = "/illustrations", {"prompt": ILLUSTRATION_PROMPT.format(n=item.n),
                                            "style": "illustration"}
        elif item.kind == "transcription":
            audio = wav_tone(seconds=0.2, frequency=200.0 + item.n)  # distinct audio per job
            item.audio_sha = hashlib.sha256(audio).hexdigest()
            path, body = "/transcriptions", {"audioData": base64.b64encode(audio).decode(),
                                             "mimeType": "audio/wav"}
        else:
            path, body = f"/spaces/{spaces[item.n % len(spaces)]}/story", {}
        headers = {"Idempotency-Key": f"chaos-{self.run_id}-{item.n}"}
        for attempt in range(SUBMIT_ATTEMPTS):
            wait = min(8.0, 0.25 * 2**attempt)
            try:
                response = self.session().post(self.base + path, json=body, headers=headers,
                                               timeout=SUBMIT_TIMEOUT_S)
            except requests.RequestException as exc:
                item.refused = type(exc).__name__
                self.stats.retry(item.refused)
                self.stats.refused(None, item.refused)
                time.sleep(wait)
                continue
            if response.status_code in (200, 202):
                item.job_id, item.refused = uuid.UUID(response.json()["id"]), None
                return item
            self.stats.refused(response)
            item.refused = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code != 429 and response.status_code < 500:
                return item  # the request itself is wrong: retrying will not help
            self.stats.retry(f"HTTP {response.status_code}")
            retry_after = response.headers.get("Retry-After", "")
            time.sleep(min(30.0, float(retry_after)) if retry_after.isdigit() else wait)
        return item


def setup_user_and_spaces(base_url: str, count: int) -> tuple[str, list[str]]:
    """Register a user and make ``count`` spaces of ``NOTES_PER_SPACE`` moments each."""
    http = requests.Session()
    api = f"{base_url}/api/v1"

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = http.post(api + path, json=body, timeout=SUBMIT_TIMEOUT_S)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        answer: dict[str, Any] = response.json()
        return answer

    token = post("/auth/register", {"email": f"chaos-{uuid.uuid4().hex[:8]}@example.com",
                                    "password": "a long chaos password"})["accessToken"]
    http.headers["Authorization"] = f"Bearer {token}"
    spaces = []
    for k in range(count):
        space = post("/spaces", {"title": f"Chaos space {k}"})
        for note in range(NOTES_PER_SPACE):
            post(f"/spaces/{space['id']}/notes", {
                "title": f"Moment {note}", "textContent": f"Moment {note} of space {k}.",
                "timestamp": 1_700_000_000_000 + note * 3_600_000,
            })
        spaces.append(str(space["id"]))
    return token, spaces


def plan_submissions(opts: Options, rng: random.Random) -> list[Submission]:
    stories = round(opts.jobs * opts.story_share) if opts.spaces else 0
    transcriptions = round(opts.jobs * opts.transcription_share)
    illustrations = max(0, opts.jobs - stories - transcriptions)
    kinds = ["story"] * stories + ["transcription"] * transcriptions
    kinds += ["illustration"] * illustrations
    rng.shuffle(kinds)
    return [Submission(kind, n) for n, kind in enumerate(kinds[: opts.jobs])]


# --- what happened --------------------------------------------------------------------------


def job_progress(engine: Engine, expected: int) -> tuple[int, int, Counter[str]]:
    """(final jobs, jobs in the database, count per status)."""
    with engine.connect() as conn:
        rows = conn.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    by_status = Counter({status: int(count) for status, count in rows})
    final = sum(n for status, n in by_status.items() if status in TERMINAL_STATUSES)
    return final, max(expected, sum(by_status.values())), by_status


@dataclass
class Findings:
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # label, figure, target
    missed: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, label: str, figure: object, target: str = "", ok: bool | None = None) -> None:
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        self.lines.append((label, str(figure), f"{target}{mark}" if target else mark.strip()))
        if ok is False:
            self.missed.append(label)

    def print(self) -> None:
        width = max(len(label) for label, _, _ in self.lines)
        for label, figure, target in self.lines:
            print(f"  {label:<{width}}  {figure:>10}   {target}".rstrip())
        for line in self.details:
            print(f"    {line}")


def audio_sha(inline: dict[str, Any]) -> str | None:
    data = inline.get("data")
    if not isinstance(data, str):
        return None
    with suppress(ValueError):
        return hashlib.sha256(base64.b64decode(data + "==", altchars=b"-_")).hexdigest()
    return None


@dataclass
class Evidence:
    """Everything the run left behind: database rows, image files, the fake's requests."""

    submissions: list[Submission]
    jobs: dict[uuid.UUID, Any]
    stories: list[Any]
    chapters: list[Any]
    space_of_note: dict[str, uuid.UUID]
    image_files: dict[str, list[Path]]
    temp_files: int
    requests: list[RecordedRequest]

    @classmethod
    def gather(cls, engine: Engine, submissions: list[Submission], media_dir: Path,
               gemini: FakeGemini) -> Evidence:
        with engine.connect() as conn:
            jobs = {row.id: row for row in conn.execute(select(
                Job.id, Job.kind, Job.status, Job.attempts, Job.max_attempts, Job.error,
                Job.parent_id, Job.input, Job.result, Job.created_at, Job.finished_at,
                Job.updated_at,
                Job.heartbeat_at,
            ))}
            stories = list(conn.execute(select(Story.id, Story.job_id, Story.space_id)))
            chapters = list(conn.execute(
                select(Chapter.id, Chapter.story_id, Chapter.generated_image_url)))
            space_of_note = {str(note_id): space_id for note_id, space_id
                             in conn.execute(select(Note.id, Note.space_id))}
        files: dict[str, list[Path]] = defaultdict(list)
        temp_files = 0
        folder = media_dir / "illustrations"
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name.startswith(".tmp-"):
                temp_files += 1
            else:
                files[path.name.split(".", 1)[0]].append(path)  # illustrations/<job id>.<ext>
        return cls(submissions, jobs, stories, chapters, space_of_note, files, temp_files,
                   gemini.requests)

    def of_kind(self, kind: str) -> list[Any]:
        return [job for job in self.jobs.values() if job.kind == kind]


def report_outcomes(found: Findings, ev: Evidence, stats: SubmitStats, opts: Options) -> None:
    accepted = [s for s in ev.submissions if s.job_id is not None]
    refused = [s for s in ev.submissions if s.job_id is None]
    found.add("jobs submitted", len(ev.submissions))
    found.add("  accepted (202/200)", len(accepted))
    found.add("  refused after retries", len(refused), "0", not refused)
    for item in refused[:5]:
        found.details.append(f"refused {item.kind} #{item.n}: {item.refused}")
    if stats.retries:
        found.details.append(f"submit retries by reason: {dict(stats.retries)}")
    found.add("  illustration children of stories",
              sum(j.parent_id is not None for j in ev.jobs.values()))
    lost = [s for s in accepted if s.job_id not in ev.jobs]
    found.add("lost (accepted, not in the database)", len(lost), "0", not lost)

    statuses = Counter(j.status for j in ev.jobs.values())
    found.add("succeeded", statuses["succeeded"])
    found.add("failed", statuses["failed"])
    failed = Counter((j.error or {}).get("code", "?") for j in ev.jobs.values()
                     if j.status == "failed")
    for code, count in sorted(failed.items()):
        found.add(f"  failed: {code}", count)
    found.add("canceled", statuses["canceled"])
    stuck = [j for j in ev.jobs.values() if j.status not in TERMINAL_STATUSES]
    found.add("stuck (not final at the deadline)", len(stuck), "0", not stuck)
    for status, count in Counter(j.status for j in stuck).items():
        found.add(f"  stuck: {status}", count)
    now = utcnow()
    for job in sorted(stuck, key=lambda j: (j.kind, str(j.id)))[:8]:
        beat = f"{(now - job.heartbeat_at).total_seconds():.0f}s ago" if job.heartbeat_at else "-"
        found.details.append(
            f"stuck {job.kind} {job.id} {job.status} attempts={job.attempts}/{job.max_attempts} "
            f"heartbeat={beat} error={(job.error or {}).get('code')} parent={job.parent_id}")
    if opts.fault_rate > 0 and ev.jobs:
        share = statuses["succeeded"] / len(ev.jobs)
        found.add("succeeded share", f"{share:.1%}", ">= 99%", share >= 0.99)
    over = [j for j in ev.jobs.values() if j.attempts > j.max_attempts]
    found.add("attempts beyond max_attempts", len(over), "0", not over)
    found.details.append(
        f"attempts per job: {dict(sorted(Counter(j.attempts for j in ev.jobs.values()).items()))}")


def calls_beyond_attempts(calls: Counter[str], attempts: Counter[str]) -> int:
    """Upstream calls made for a key beyond the attempts claimed for it (one call each)."""
    return sum(max(0, n - attempts[key]) for key, n in calls.items())


def image_owner(job: Any) -> str:
    """Id of the job whose file holds this job's image: itself, or the one it reused."""
    url = str((job.result or {}).get("imageUrl") or "")
    return url.rsplit("/", 1)[-1].split(".", 1)[0] or str(job.id)


@dataclass
class UpstreamCalls:
    """The calls the fake Gemini served, per distinct input: illustration prompt, audio
    (sha256), story (space). A call it refused with 429 did nothing (and, being back-pressure,
    spends no attempt): it is not counted."""

    images: Counter[str]
    images_drawn: Counter[str]
    audio: Counter[str]
    stories: Counter[str]

    @classmethod
    def count(cls, ev: Evidence) -> UpstreamCalls:
        prompts = {job.input["prompt"] for job in ev.of_kind("illustration")}
        served = [r for r in ev.requests if r.status != 429]
        images: Counter[str] = Counter()
        drawn: Counter[str] = Counter()
        for request in served:
            if request.kind == "illustration":
                text = request.prompt_text
                prompt = next((p for p in prompts if p in text), text)
                images[prompt] += 1
                drawn[prompt] += request.status == 200 and request.fault is None
        audio = Counter(sha for r in served if r.kind == "transcription"
                        for sha in map(audio_sha, r.inline_data) if sha)
        stories = Counter[str]()
        for request in served:
            note_ids = NOTE_ID_LINE.findall(request.prompt_text) if request.kind == "story" else []
            if note_ids:
                stories[str(ev.space_of_note.get(note_ids[0], note_ids[0]))] += 1
        return cls(images, drawn, audio, stories)


def report_calls_per_input(found: Findings, ev: Evidence, opts: Options) -> None:
    """A paid answer is paid for once: at most one call per distinct input. A worker SIGKILLed
    mid-call and injected upstream faults make a second call legitimately (that answer never
    came): the target holds without them."""
    calls = UpstreamCalls.count(ev)
    per_input = calls.images + calls.audio + calls.stories
    most = max(per_input.values(), default=0)
    twice = sum(n > 1 for n in per_input.values())
    label = "upstream calls per distinct input, max"
    if opts.kills or opts.fault_rate:
        found.add(label, most, f"info: <= 1 applies without kills and upstream faults "
                               f"({twice} inputs called more than once)")
    else:
        found.add(label, most, "<= 1", most <= 1)
    for kind, counter in (("illustration", calls.images), ("transcription", calls.audio),
                          ("story", calls.stories)):
        again = sorted((n, key) for key, n in counter.items() if n > 1)[-3:]
        for n, key in again:
            found.details.append(f"{kind} input called {n} times: {key[:60]}")


def report_refusals(found: Findings, stats: SubmitStats) -> None:
    """Every refused submit must tell the client when to come back: 503 or 429 with
    Retry-After, never a bare 500 or a dropped connection."""
    total = sum(stats.refusals.values())
    good = sum(n for reason, n in stats.refusals.items()
               if reason in ("503 with Retry-After", "429 with Retry-After"))
    found.add("refused submits (each retried)", total)
    for reason, count in sorted(stats.refusals.items()):
        found.add(f"  {reason}", count)
    found.add("  refusals not 503/429 with Retry-After", total - good, "0", total == good)


def report_first_requests(found: Findings, postgres: PostgresRestarts) -> None:
    """The first request after each PostgreSQL restart succeeds (no cut pooled connection)."""
    first = postgres.first_requests
    failed = [r for r in first if r.status != 200]
    found.add("first request after PostgreSQL returned, not 200", len(failed), "0", not failed)
    found.details.append("first request after each PostgreSQL restart: " + ", ".join(
        f"{r.status} in {r.ms:.0f} ms" for r in first))


def report_duplicates(found: Findings, ev: Evidence) -> None:
    # Database effects: one story per story job, one chapter per note, one child per chapter.
    notes = Counter(ev.space_of_note.values())
    chapters = Counter(c.story_id for c in ev.chapters)
    dup_stories = sum(n - 1 for n in Counter(s.job_id for s in ev.stories).values() if n > 1)
    extra_chapters = sum(max(0, chapters[s.id] - notes[s.space_id]) for s in ev.stories)
    story_of_job = {s.job_id: s.id for s in ev.stories}
    children = Counter(j.parent_id for j in ev.jobs.values() if j.parent_id is not None)
    extra_children = sum(max(0, n - chapters.get(story_of_job.get(parent), 0))
                         for parent, n in children.items())
    # Uploads: one file per illustration job, named after it, so a retry overwrites it.
    dup_files = sum(len(paths) - 1 for paths in ev.image_files.values())
    illustrations = ev.of_kind("illustration")
    succeeded = {str(j.id) for j in illustrations if j.status == "succeeded"}
    # A cached illustration reuses the file of the job that drew it: look that one up.
    missing_files = sorted(str(j.id) for j in illustrations
                           if j.status == "succeeded" and image_owner(j) not in ev.image_files)
    chapter_url = {str(c.id): c.generated_image_url for c in ev.chapters}
    missing_urls = [j for j in illustrations if j.status == "succeeded"
                    and j.input.get("chapterId") in chapter_url
                    and not chapter_url[j.input["chapterId"]]]
    # Upstream calls: at most one per claimed attempt, matched by prompt, audio or space.
    calls = UpstreamCalls.count(ev)
    image_attempts: Counter[str] = Counter()
    image_successes: Counter[str] = Counter()
    for job in illustrations:
        image_attempts[job.input["prompt"]] += job.attempts
        image_successes[job.input["prompt"]] += job.status == "succeeded"
    audio_attempts: Counter[str] = Counter()
    for item in ev.submissions:
        row = ev.jobs.get(item.job_id) if item.job_id else None
        if row is not None and item.audio_sha:
            audio_attempts[item.audio_sha] += row.attempts
    story_attempts = Counter[str]()
    for job in ev.of_kind("story"):
        story_attempts[job.input["spaceId"]] += job.attempts

    figures = {
        "  stories beyond one per story job": dup_stories,
        "  chapters beyond the notes": extra_chapters,
        "  illustration children beyond chapters": extra_children,
        "  image files beyond one per job": dup_files,
        "  image calls beyond attempts": calls_beyond_attempts(calls.images, image_attempts),
        "  transcription calls beyond attempts": calls_beyond_attempts(calls.audio,
                                                                       audio_attempts),
        "  story calls beyond attempts": calls_beyond_attempts(calls.stories, story_attempts),
    }
    total = sum(figures.values())
    found.add("duplicate effects", total, "0", total == 0)
    for label, figure in figures.items():
        found.add(label, figure)
    missing = len(missing_files) + len(missing_urls)
    found.add("missing effects (succeeded, no image)", missing, "0", missing == 0)
    for job_id in missing_files[:3]:
        found.details.append(f"succeeded illustration {job_id} has no file")
    for job in missing_urls[:3]:
        found.details.append(f"succeeded illustration {job.id}: chapter has no image URL")
    redrawn = calls_beyond_attempts(calls.images_drawn, image_successes)
    found.add("  images redrawn after a lost attempt", redrawn, "info: overwrites, same key")
    found.add("  image files of unfinished jobs", len(set(ev.image_files) - succeeded), "info")
    found.add("  temp files left by killed workers", ev.temp_files, "info")


def report_recovery(found: Findings, ev: Evidence, opts: Options, faults: list[Fault],
                    gemini: FakeGemini, started: datetime) -> None:
    """Every job final within two reaper intervals of the end of the last fault."""
    stuck = any(j.status not in TERMINAL_STATUSES for j in ev.jobs.values())
    finished = [j.finished_at or j.updated_at for j in ev.jobs.values()]
    all_final_at = max(finished) if finished and not stuck else None
    last_fault = max((f.ended for f in faults), default=None)
    found.add("faults", len(faults))
    for fault in faults:
        during = ""
        if fault.ended > fault.started:
            accepted = sum(fault.started <= j.created_at <= fault.ended and j.parent_id is None
                           for j in ev.jobs.values())
            during = f", {accepted} submits accepted meanwhile"
        found.details.append(f"fault {clock(fault.started)}-{clock(fault.ended)}  {fault.what}, "
                             f"{fault.final_share:.0%} of the jobs final{during}")
    if any(f.final_share >= 1.0 for f in faults):
        found.details.append("a fault fired after every job was final: it tested nothing "
                             "(use more --jobs)")
    if sum(gemini.fault_counts.values()):
        last = gemini.last_fault_at
        found.details.append(f"upstream faults injected: {gemini.fault_counts} "
                             f"(last {clock(datetime.fromtimestamp(last, UTC) if last else None)})")
    found.add("last fault ended at", clock(last_fault))
    found.add("every job final at", clock(all_final_at) if all_final_at else "never")
    found.add("run time, first submit to all final",
              f"{(all_final_at - started).total_seconds():.1f} s" if all_final_at else "-")
    # A fault before the last submit: the tail after it is the submitting as much as recovery.
    last_submit = max((j.created_at for j in ev.jobs.values() if j.parent_id is None),
                      default=None)
    if all_final_at is not None and last_submit is not None:
        found.add("final after the last submit accepted",
                  f"{max(0.0, (all_final_at - last_submit).total_seconds()):.1f} s", "info")
    if last_fault is not None:
        target = f"<= {opts.target_recovery_s:.0f} s (2 reaper intervals)"
        if all_final_at is None:
            found.add("final after the last fault", "never", target, False)
        elif opts.fault_rate > 0:
            # Upstream faults go on after the last kill and keep jobs in their retry backoff.
            recovery = (all_final_at - last_fault).total_seconds()
            found.add("final after the last fault", f"{max(0.0, recovery):.1f} s",
                      f"info: {target} applies without upstream faults")
        else:
            recovery = (all_final_at - last_fault).total_seconds()
            found.add("final after the last fault", f"{max(0.0, recovery):.1f} s", target,
                      recovery <= opts.target_recovery_s)
    found.add("reaper interval", f"{opts.reaper_interval} s",
              f"heartbeat timeout {opts.heartbeat_timeout} s, resend after "
              f"{opts.resend_after} s")
    found.details.append(f"fake Gemini requests: {dict(Counter(r.kind for r in ev.requests))}")


# --- the run --------------------------------------------------------------------------------


def report_documents(found: Findings, engine: Engine, redis_url: str) -> None:
    """Every job's document in Redis (what polls read) against the one rendered from its row
    now: none may be older. Jobs with none are read from the database (the Redis restart
    emptied it; later transitions wrote theirs again). A worker SIGKILLed between a commit and
    its write leaves an unfinished job's older document for at most ``LIVE_TTL_S``: one still
    older after that long is a miss."""
    stale = _stale_documents(engine, redis_url)
    healed = []
    if stale:
        time.sleep(LIVE_TTL_S + 1)
        later = set(_stale_documents(engine, redis_url, stale))
        healed = [job_id for job_id in stale if job_id not in later]
        stale = sorted(later)
    found.add("job documents in Redis older than the database", len(stale), "0", not stale)
    found.add("  older for less than the live document TTL (a kill between commit and write)",
              len(healed), "info")
    for job_id in stale[:3]:
        found.details.append(f"job {job_id}: its document in Redis is not its row's")


def _stale_documents(engine: Engine, redis_url: str,
                     only: list[uuid.UUID] | None = None) -> list[uuid.UUID]:
    with Session(engine) as session:
        query = select(Job) if only is None else select(Job).where(Job.id.in_(only))
        jobs = list(session.scalars(query))
        etags = {job.id: render_job(session, job).etag for job in jobs}
    pipe = redis.Redis.from_url(redis_url).pipeline(transaction=False)
    for job in jobs:
        pipe.hget(document_key(job.id), "etag")
    stored = dict(zip([job.id for job in jobs], pipe.execute(), strict=True))
    return [job_id for job_id, etag in stored.items()
            if etag is not None and etag.decode() != etags[job_id]]


def wait_until_final(engine: Engine, expected: int, monkey: ChaosMonkey,
                     deadline: float) -> bool:
    """Poll until every job is final and the chaos is over; True if the deadline passed."""
    next_report = 0.0
    while True:
        try:
            final, total, by_status = job_progress(engine, expected)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            time.sleep(0.5)  # PostgreSQL is restarting
            continue
        now = time.monotonic()
        if final == total and monkey.done:
            return False
        if now >= deadline:
            return True
        if now >= next_report:
            pending = {s: n for s, n in by_status.items() if s not in TERMINAL_STATUSES}
            print(f"  {clock(utcnow())}  final {final}/{total}  {pending}", flush=True)
            next_report = now + 5
        time.sleep(0.5)


def run(opts: Options) -> int:
    rng = random.Random(opts.seed)
    work_dir = Path(tempfile.mkdtemp(prefix="lifetales-chaos-"))
    var_dir = work_dir / "var"
    print(f"chaos: {opts.jobs} jobs, {opts.workers} workers x {WORKER_CONCURRENCY} threads, "
          f"broker {opts.broker}, {opts.kills} kills, {opts.redis_restarts} Redis restarts, "
          f"{opts.pg_restarts} PostgreSQL restarts, {opts.broker_restarts} RabbitMQ restarts, "
          f"upstream faults "
          f"{opts.fault_rate:.0%}, latency {opts.latency} s, upstream timeout "
          f"{opts.upstream_timeout} s", flush=True)
    print(f"logs: {var_dir} (api.log, worker-N.log, beat.log)", flush=True)
    with ExitStack() as stack:
        cluster = None
        if opts.pg_restarts:
            cluster = stack.enter_context(private_cluster(opts.keep_database))
            database_url = cluster.create_database("lt_chaos")
        else:
            database_url = stack.enter_context(throwaway_database(opts.keep_database))
        gemini = stack.enter_context(FakeGemini(
            latency=opts.latency, fault_rate=opts.fault_rate, seed=opts.seed,
            hang_seconds=opts.hang_seconds))
        redis_server = RedisServer(work_dir / "redis").start()
        stack.callback(redis_server.stop)
        rabbitmq = private_rabbitmq(opts, work_dir, stack)
        broker = rabbitmq.url if rabbitmq is not None else redis_server.url
        env = platform_env(opts, database_url, broker, gemini.base_url, var_dir,
                           redis_url=redis_server.url)
        services = Services(env, var_dir)
        stack.callback(services.stop)
        services.migrate()
        services.start_api()
        services.start_beat()
        fleet = Fleet(services, rng)
        for _ in range(opts.workers):
            fleet.start_one()
        ready = requests.get(f"{services.base_url}/ready", timeout=10)
        if ready.status_code != 200:
            raise RuntimeError(f"platform not ready: {ready.text[:300]}")
        engine = make_engine(database_url)
        stack.callback(engine.dispose)

        token, spaces = setup_user_and_spaces(services.base_url, opts.spaces)
        postgres = None
        if cluster is not None:
            postgres = PostgresRestarts(cluster, opts.pg_downtime, services.base_url)
            postgres.authorize(token)
        submissions = plan_submissions(opts, rng)
        expected = len(submissions) + NOTES_PER_SPACE * sum(
            s.kind == "story" for s in submissions)

        def final_share() -> float:
            final, total, _ = job_progress(engine, expected)
            return final / total

        monkey = ChaosMonkey(opts, fleet, redis_server, final_share, rng, postgres, rabbitmq)

        def stop_monkey() -> None:
            monkey.stopping.set()
            monkey.join(timeout=60)

        stack.callback(stop_monkey)
        stats = SubmitStats()
        submitter = Submitter(services.base_url, token, stats)
        started = utcnow()
        deadline = time.monotonic() + opts.deadline
        monkey.start()
        print(f"  {clock(started)}  submitting {len(submissions)} jobs "
              f"({dict(Counter(s.kind for s in submissions))})", flush=True)
        pool = ThreadPoolExecutor(max_workers=opts.clients, thread_name_prefix="client")
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        list(pool.map(lambda s: submitter.submit(s, spaces), submissions))
        print(f"  {clock(utcnow())}  submitted", flush=True)
        deadline_hit = wait_until_final(engine, expected, monkey, deadline)
        if not deadline_hit:
            time.sleep(opts.reaper_interval)  # let a late duplicate show before counting
        stop_monkey()
        evidence = Evidence.gather(engine, submissions, Path(env["MEDIA_DIR"]), gemini)
        findings = Findings()
        report_outcomes(findings, evidence, stats, opts)
        report_refusals(findings, stats)
        report_duplicates(findings, evidence)
        report_calls_per_input(findings, evidence, opts)
        report_recovery(findings, evidence, opts, monkey.faults, gemini, started)
        if postgres is not None:
            report_first_requests(findings, postgres)
        report_documents(findings, engine, redis_server.url)
        print("\nchaos results (targets: 0 lost, 0 stuck, 0 duplicate effects, every refusal a "
              "503/429 with Retry-After, every job final within 2 reaper intervals after the "
              "last fault)")
        findings.print()
        for error in monkey.errors:
            print(f"  chaos error: {error}")
        print(f"logs: {var_dir}", flush=True)
        print("stopping the platform...", flush=True)
    if findings.missed or monkey.errors:
        print(f"MISSED: {', '.join(findings.missed) or 'chaos errors'}")
        return 1
    print("all targets met")
    return 0


def private_rabbitmq(opts: Options, work_dir: Path, stack: ExitStack) -> RabbitMQNode | None:
    """With ``--broker amqp``: a private RabbitMQ node (stopped with the run), else None."""
    if opts.broker != "amqp":
        return None
    node = RabbitMQNode(work_dir / "rabbitmq").start()
    stack.callback(node.stop)
    print(f"RabbitMQ node {node.name} on port {node.port}", flush=True)
    return node


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--jobs", type=int, default=1000, help="jobs to submit (stories add 3 children each)")
    add("--workers", type=int, default=3, help=f"worker processes ({WORKER_CONCURRENCY} threads)")
    add("--kills", type=int, default=5, help="workers SIGKILLed (each replaced)")
    add("--redis-restarts", type=int, default=1, help="Redis SHUTDOWN NOSAVE + start")
    add("--redis-downtime", type=float, default=2.0, help="seconds Redis stays down")
    add("--pg-restarts", type=int, default=1,
        help="PostgreSQL crash-restarts (pg_ctl stop -m immediate + start) of a private cluster")
    add("--pg-downtime", type=float, default=2.0, help="seconds PostgreSQL stays down")
    add("--fault-rate", type=float, default=0.0, help="share of Gemini calls that fail")
    add("--latency", type=float, default=0.2, help="seconds per fake Gemini answer")
    add("--upstream-timeout", type=float, default=10.0,
        help="agents' Gemini timeout in seconds (a hang fault lasts 5 s longer)")
    add("--deadline", type=float, default=600.0, help="seconds from the first submit")
    add("--reaper-interval", type=int, default=5, help="REAPER_INTERVAL_SECONDS")
    # Below the reaper interval: a dead worker is noticed at the first reaper pass after it.
    add("--heartbeat-timeout", type=int, default=3, help="JOB_HEARTBEAT_TIMEOUT_SECONDS")
    add("--resend-after", type=int, default=5, help="JOB_QUEUED_RESEND_AFTER_SECONDS")
    add("--story-share", type=float, default=0.05, help="share of story jobs")
    add("--transcription-share", type=float, default=0.35, help="share of transcriptions")
    add("--spaces", type=int, default=5, help=f"spaces of {NOTES_PER_SPACE} notes for stories")
    add("--clients", type=int, default=8, help="concurrent submitting clients")
    add("--seed", type=int, default=None, help="seed of the job mix, chaos and faults")
    add("--keep-database", action="store_true", help="keep the database to inspect job rows")
    add("--broker", choices=("redis", "amqp"), default="redis",
        help="Celery broker: the private Redis, or a private RabbitMQ node")
    add("--broker-restarts", type=int, default=0,
        help="RabbitMQ crash-restarts (SIGKILL + start; needs --broker amqp)")
    add("--broker-downtime", type=float, default=2.0,
        help="seconds RabbitMQ stays down before it is started again (its start adds more)")
    args = parser.parse_args(argv)
    if args.broker_restarts < 0 or (args.broker_restarts and args.broker != "amqp"):
        parser.error("--broker-restarts is a count >= 0 and needs --broker amqp "
                     "(Redis as broker restarts with --redis-restarts)")
    if args.jobs < 1 or args.workers < 1 or min(args.kills, args.redis_restarts,
                                                 args.pg_restarts) < 0:
        parser.error("--jobs and --workers must be positive, --kills and --redis-restarts and "
                     "--pg-restarts >= 0")
    if not 0 <= args.fault_rate <= 1:
        parser.error("--fault-rate is a share between 0 and 1")
    return Options(**vars(args))


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(opts)
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
