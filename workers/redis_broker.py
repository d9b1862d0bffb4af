"""kombu's Redis transport with one redis-py client per channel for its commands.

kombu builds a new ``redis.Redis`` around the channel's connection pool for every publish, every
acknowledgement and every delivery it records, and redis-py's constructor fills a table of ~170
response callbacks each time: measured (bench/cpu_profile.py), ~0.1 ms of CPU for each of the
three a job costs. A client is thread-safe (each command or pipeline takes a pooled
connection), so one per channel serves them all. celeryconfig.py selects this transport for
Redis brokers; everything else is kombu's own.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's own (BRPOP) client: kombu caches it already
            return super()._create_client(asynchronous=True)
        client = self.__dict__.get("_commands_client")
        if client is None:
            client = self.__dict__["_commands_client"] = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
