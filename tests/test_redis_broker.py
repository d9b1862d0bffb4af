"""The Redis broker transport (workers/redis_broker.py): kombu's, with one redis-py client per
channel for its commands. Messages still go out, come back and are acknowledged, on a real
Redis; and the channel hands out the same client every time instead of building one."""

from __future__ import annotations

import uuid

import redis
from kombu import Connection

import celeryconfig
from tests.conftest import REDIS_BASE


def test_messages_round_trip_and_acks_clear_the_unacked_index(redis_client: redis.Redis) -> None:
    url = f"{REDIS_BASE}/14"
    with Connection(url, transport="workers.redis_broker:Transport") as connection:
        queue = connection.SimpleQueue(f"broker-test-{uuid.uuid4().hex}")
        try:
            for n in range(3):
                queue.put({"n": n})
            received = []
            for _ in range(3):
                message = queue.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()
            assert received == [0, 1, 2]
            channel = queue.channel
            assert channel._create_client() is channel._create_client()
            unacked = redis.Redis.from_url(url).hlen(channel.unacked_key)
            assert unacked == 0
        finally:
            queue.clear()
            queue.close()


def test_celery_uses_it_for_redis_brokers() -> None:
    # The tests' broker is Redis (CELERY_BROKER_URL), so celeryconfig chose the transport.
    assert celeryconfig.broker_url.startswith("redis://")
    assert getattr(celeryconfig, "broker_transport", None) == "workers.redis_broker:Transport"
