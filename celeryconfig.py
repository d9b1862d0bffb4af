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
imports = ("workers.process", "workers.tasks")
# The database is the source of truth for job state; Celery keeps no results.
task_ignore_result = True
result_backend = None

AMQP_BROKER = broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))
# Seconds a publish waits for RabbitMQ to confirm it; past that it counts as not sent (the
# submit still answers, the reaper re-sends). Also bounds a publish to a blocked broker.
PUBLISH_CONFIRM_TIMEOUT_S = 5.0

# Queues sized per timeout class; each may get its own worker pool in production.
# ``webhooks``: job webhook deliveries, kept apart so a slow receiver never holds a job worker.
# ``render``: CPU-bound film renders (ffmpeg), on workers of their own, one at a time each.
# ``video``: long-running upstream operations (narrator clips): each task only starts one, looks
# at it once or stores its result; the waiting in between holds no thread (the job re-schedules
# itself).
QUEUE_NAMES = ("transcription", "illustration", "story", "speech", "render", "video", "batch",
               "maintenance", "webhooks")
# Explicit exchange + routing key per queue: left implicit, every queue binds to the default
# queue's key and a message would be copied into all of them.
# On RabbitMQ the queues are durable quorum queues (replicated, kept on disk, redelivered
# when a consumer's connection drops). Countdowns then go through Celery's native delayed
# delivery, which binds each queue's exchange to its delay exchanges: that needs topic
# exchanges (with a direct one the worker would hold the message until its ETA).
task_queues = tuple(
    Queue(
        name,
        Exchange(name, type="topic" if AMQP_BROKER else "direct"),
        routing_key=name,
        queue_arguments={"x-queue-type": "quorum"} if AMQP_BROKER else None,
    )
    for name in QUEUE_NAMES
)
task_default_queue = "story"
# Each task's default queue; the routing key comes from the queue, never from the route: a
# job sent to another queue (a batch's stories and illustrations go to ``batch``) would keep
# the route's key and, on a topic exchange, match no binding (RabbitMQ drops it).
# Any publish option in a route is passed to the publish: on RabbitMQ each waits at most
# this long for its confirm.
_PUBLISH_OPTIONS = {"confirm_timeout": PUBLISH_CONFIRM_TIMEOUT_S} if AMQP_BROKER else {}
task_routes: dict[str, dict[str, Any]] = {
    name: {"queue": queue, **_PUBLISH_OPTIONS}
    for name, queue in (
        ("lifetales.transcribe_audio", "transcription"),
        ("lifetales.generate_illustration", "illustration"),
        ("lifetales.build_story", "story"),
        ("lifetales.narrate_text", "speech"),
        ("lifetales.make_film", "story"),
        ("lifetales.render_film", "render"),
        ("lifetales.make_narrator_clip", "video"),
        ("lifetales.run_story_batch", "batch"),
        ("lifetales.reap_stale_jobs", "maintenance"),
        ("lifetales.deliver_webhook", "webhooks"),
        ("lifetales.prune_retention", "maintenance"),
    )
}

# Soft limit raises inside the task (the job is recorded as timed out); the hard limit kills it.
# Each is above its agent's own HTTP timeout (30/45/60/60 s) so the SDK gives up first.
TIME_LIMITS = {
    "transcription": (40, 50),
    "illustration": (55, 65),
    "story": (75, 90),
    "speech": (75, 90),
    # Sized for minutes: the ffmpeg run's own limit (RENDER_TIMEOUT_SECONDS, 900 s) plus
    # fetching the pictures and uploading the film.
    "render": (1020, 1080),
    # One step of a video operation: a start or a look (30 s each), or fetching the finished
    # clip (download up to 120 s), probing it and taking its poster, and uploading both.
    "video": (240, 270),
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
# A threads-pool task cannot be stopped from outside: when the broker connection drops, running
# tasks finish; the broker meanwhile gives their messages to another worker, whose claim finds
# the job running (fenced) and does nothing. Set explicitly (Celery 6 changes the default).
worker_cancel_long_running_tasks_on_connection_loss = False

# I/O-bound work (HTTP to Gemini/Cloudinary): threads, many in flight per process.
worker_pool = "threads"
worker_concurrency = env_int(os.environ, "CELERY_CONCURRENCY", DEFAULT_CONCURRENCY)

# Publishing connections (the producer pool) sized to the concurrency, so a thread that sends
# a message never waits for one; on Redis acks go through this pool too, and a pool that is
# too small makes them fail. workers/app.py resizes it to the worker's real concurrency.
broker_pool_limit = worker_concurrency + 4
broker_connection_retry_on_startup = True
if AMQP_BROKER:
    # Publisher confirms: a publish returns once RabbitMQ has the message (on a quorum queue:
    # written by a majority), so an accepted job's message is not lost with a dropped
    # connection; a refused one raises, and the reaper re-sends it.
    broker_transport_options: dict[str, Any] = {"confirm_publish": True}
    # Queues Celery declares by itself (none of ours: they are all above) are quorum too.
    task_default_queue_type = "quorum"
    task_default_exchange_type = "topic"
    # Quorum queues have no global QoS: Celery then applies the prefetch per consumer, so a
    # worker reading k queues may hold up to k x concurrency x multiplier messages.
    worker_detect_quorum_queues = True
    # The delay levels (celery_delayed_0..27) are quorum queues too; needs RabbitMQ >= 3.10
    # (at-least-once dead-lettering). Declared and bound by every worker at start.
    broker_native_delayed_delivery_queue_type = "quorum"
elif broker_url.startswith(("redis://", "rediss://")):
    if broker_url.startswith("redis://"):  # rediss (TLS) keeps kombu's own, untouched
        # kombu's Redis transport, reusing one client per channel (workers/redis_broker.py).
        broker_transport = "workers.redis_broker:Transport"
    broker_transport_options = {
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
