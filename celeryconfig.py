"""Every Celery setting lives here: queues, routes, time limits, acknowledgements, prefetch, beat.

Celery loads this module lazily (``config_from_object``) the first time the app is configured.
"""

from __future__ import annotations

import os
from typing import Any

from kombu import Exchange, Queue

from config import (
    DEFAULT_CONCURRENCY,
    RetentionSettings,
    broker_url_from_env,
    env_int,
    var_dir_from_env,
)

broker_url = broker_url_from_env(os.environ)
imports = ("workers.tasks",)
# The database is the source of truth for job state; Celery keeps no results.
task_ignore_result = True
result_backend = None

# Queues sized per timeout class; each may get its own worker pool in production.
# ``webhooks``: job webhook deliveries, kept apart so a slow receiver never holds a job worker.
QUEUE_NAMES = ("transcription", "illustration", "story", "batch", "maintenance", "webhooks")
# Explicit exchange + routing key per queue: left implicit, every queue binds to the default
# queue's key and a message would be copied into all of them.
task_queues = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUE_NAMES
)
task_default_queue = "story"
task_routes = {
    name: {"queue": queue, "routing_key": queue}
    for name, queue in (
        ("lifetales.transcribe_audio", "transcription"),
        ("lifetales.generate_illustration", "illustration"),
        ("lifetales.build_story", "story"),
        ("lifetales.run_story_batch", "batch"),
        ("lifetales.reap_stale_jobs", "maintenance"),
        ("lifetales.deliver_webhook", "webhooks"),
        ("lifetales.prune_retention", "maintenance"),
    )
}

# Soft limit raises inside the task (the job is recorded as timed out); the hard limit kills it.
# Each is above its agent's own HTTP timeout (30/45/60 s) so the SDK gives up first.
TIME_LIMITS = {
    "transcription": (40, 50),
    "illustration": (55, 65),
    "story": (75, 90),
    "batch": (120, 150),
    "maintenance": (60, 90),
    # One attempt: DNS + connect (3 s) + read (10 s) by default, far below these.
    "webhooks": (30, 40),
}
task_annotations = {
    name: {
        "soft_time_limit": TIME_LIMITS[route["queue"]][0],
        "time_limit": TIME_LIMITS[route["queue"]][1],
    }
    for name, route in task_routes.items()
}

# At-least-once delivery: ack after the task ran, redeliver if the worker died mid-task.
# Tasks are idempotent (fenced job transitions), so a redelivery is harmless.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# I/O-bound work (HTTP to Gemini/Cloudinary): threads, many in flight per process.
worker_pool = "threads"
worker_concurrency = env_int(os.environ, "CELERY_CONCURRENCY", DEFAULT_CONCURRENCY)

# Connection pools sized to the concurrency: a pool that is too small makes acks fail.
broker_pool_limit = worker_concurrency + 4
broker_connection_retry_on_startup = True
if broker_url.startswith(("redis://", "rediss://")):
    if broker_url.startswith("redis://"):  # rediss (TLS) keeps kombu's own, untouched
        # kombu's Redis transport, reusing one client per channel (workers/redis_broker.py).
        broker_transport = "workers.redis_broker:Transport"
    broker_transport_options: dict[str, Any] = {
        # Above the longest task (90 s) plus the longest retry delay (120 s): a slow task is
        # never redelivered while it still runs.
        "visibility_timeout": 3600,
        "max_connections": worker_concurrency * 2 + 8,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
    }
else:
    # kombu's SQLAlchemy transport hands these to create_engine (the embedded default).
    broker_transport_options = {"connect_args": {"timeout": 30, "check_same_thread": False}}
# A submit must not hang when the broker is down: fail fast, the reaper re-sends later.
task_publish_retry = True
task_publish_retry_policy = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

task_serializer = "json"
accept_content = ["json"]
worker_hijack_root_logger = False
# Task events (what Flower draws) cost three Redis publishes per task, and the sent event one
# more per submit in the API: measured, a visible share of a job's CPU. Flower turns them on
# in every worker for as long as it runs (its periodic ``enable_events`` broadcast), so they
# are paid for only while someone watches.
worker_send_task_events = False
task_send_sent_event = False
enable_utc = True

beat_schedule = {
    "reap-stale-jobs": {
        "task": "lifetales.reap_stale_jobs",
        "schedule": float(env_int(os.environ, "REAPER_INTERVAL_SECONDS", 10)),
        "options": {"queue": "maintenance", "expires": 30},
    },
    "prune-retention": {
        "task": "lifetales.prune_retention",
        "schedule": float(RetentionSettings.from_env(os.environ).interval_s),
        "options": {"queue": "maintenance", "expires": 300},
    },
}
# The embedded default keeps beat's schedule file under var/ with the other local state.
beat_schedule_filename = str(var_dir_from_env(os.environ) / "celerybeat-schedule")
