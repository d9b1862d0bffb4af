"""Paid model answers kept in Redis until their job's transaction commits.

When the database goes away between a model's answer and the commit that saves it, the run of
the same job that comes next (the attempt run again after the outage, or the next attempt once
the reaper took the job back) reads the kept answer instead of paying for it again. Keyed by
job and input digest, so it never answers another job or other input; it expires after
minutes instead of being deleted, which costs a commit nothing. Best effort: with Redis away
too, the answer is asked for again.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

KEEP_S = 600  # far longer than an outage a worker thread waits out (workers/outage.py)
PREFIX = "lifetales:answer:"
REDIS_TIMEOUT_S = 1.0


class AnswerKeeper:
    def __init__(self, redis_url: str, *, keep_s: int = KEEP_S) -> None:
        self._client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self.keep_s = keep_s

    @staticmethod
    def key(job_id: uuid.UUID, digest: str) -> str:
        return f"{PREFIX}{job_id}:{digest}"

    def keep(self, job_id: uuid.UUID, digest: str, answer: dict[str, Any]) -> None:
        try:
            self._client.set(self.key(job_id, digest), json.dumps(answer), ex=self.keep_s)
        except redis.RedisError as exc:
            log.warning("model answer not kept", extra={"job_id": str(job_id),
                                                        "error": type(exc).__name__})

    def recall(self, job_id: uuid.UUID, digest: str) -> dict[str, Any] | None:
        try:
            raw = self._client.get(self.key(job_id, digest))
        except redis.RedisError as exc:
            log.warning("kept model answer not read", extra={"job_id": str(job_id),
                                                             "error": type(exc).__name__})
            return None
        if raw is None:
            return None
        answer: dict[str, Any] = json.loads(raw)
        return answer


def build_answer_keeper(redis_url: str | None) -> AnswerKeeper | None:
    """None without Redis (the embedded default): answers are not kept."""
    return AnswerKeeper(redis_url) if redis_url else None
