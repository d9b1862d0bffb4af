"""Waking requests that wait on a job (``Prefer: wait``, SSE streams) when its events land.

One Redis pub/sub connection per API process, pattern-subscribed to every job's event
channel, fans notifications out to the waiting threads. Before this each waiting request
opened (and tore down) a connection of its own; redis-py closes a pub/sub connection on
``close()``. A notification only says "look again": the database stays the truth, and a
waiter that hears nothing re-reads after its timeout anyway, so a lost message (or Redis
down) delays a wake-up, never loses an event.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from workers.events import CHANNEL_PREFIX

log = logging.getLogger(__name__)

RECONNECT_S = 1.0
# How long the first waiter of a process waits for the subscription to be in place (else it
# falls back to re-reading on its timeout until it is).
SUBSCRIBE_WAIT_S = 0.5


class Watch:
    """One waiter's wake-up flag for one job."""

    def __init__(self, watcher: JobWatcher) -> None:
        self._watcher = watcher
        self._event = threading.Event()

    def wait(self, timeout: float, *, poll_s: float) -> bool:
        """Until the job's events change (True) or ``timeout`` passes; while no notifications
        arrive (no Redis, or not subscribed yet) only ``poll_s``, so the caller re-reads."""
        if not self._watcher.live:
            time.sleep(min(timeout, poll_s))
            return False
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def notify(self) -> None:
        self._event.set()


class JobWatcher:
    """Process-wide: started lazily (after gunicorn forks), by the first waiter."""

    def __init__(self, redis_url: str | None) -> None:
        self._redis_url = redis_url
        self._lock = threading.Lock()
        self._watches: dict[str, set[Watch]] = {}
        self._thread: threading.Thread | None = None
        self._subscribed = threading.Event()

    @property
    def live(self) -> bool:
        """Whether notifications arrive (else waiters poll briskly)."""
        return self._redis_url is not None and self._subscribed.is_set()

    @contextmanager
    def watch(self, job_id: uuid.UUID) -> Iterator[Watch]:
        """Register before reading the job, so a change right after the read still wakes."""
        watch = Watch(self)
        key = str(job_id)
        with self._lock:
            self._watches.setdefault(key, set()).add(watch)
            self._ensure_listener()
        if self._redis_url is not None and not self._subscribed.is_set():
            self._subscribed.wait(SUBSCRIBE_WAIT_S)
        try:
            yield watch
        finally:
            with self._lock:
                waiting = self._watches.get(key)
                if waiting is not None:
                    waiting.discard(watch)
                    if not waiting:
                        del self._watches[key]

    def _ensure_listener(self) -> None:
        if self._redis_url is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._listen, name="job-watcher", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        import redis

        assert self._redis_url is not None
        while True:
            pubsub: Any = None
            try:
                client = redis.Redis.from_url(
                    self._redis_url, socket_connect_timeout=1, health_check_interval=10
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
                self._subscribed.set()
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self._wake(message["channel"])
            except Exception as exc:
                self._subscribed.clear()
                self._wake_all()  # they re-read now rather than after their timeout
                log.warning("job watcher lost Redis; reconnecting",
                            extra={"error": type(exc).__name__})
                time.sleep(RECONNECT_S)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # already reconnecting
                        pubsub.close()

    def _wake(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        with self._lock:
            waiting = list(self._watches.get(name.removeprefix(CHANNEL_PREFIX), ()))
        for watch in waiting:
            watch.notify()

    def _wake_all(self) -> None:
        with self._lock:
            waiting = [watch for watches in self._watches.values() for watch in watches]
        for watch in waiting:
            watch.notify()
