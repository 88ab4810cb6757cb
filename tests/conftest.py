"""Fixtures every package's tests share: a real Redis server of the test session's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from devstack import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A URL to database 0 of the session's server, flushed before each test."""
    url = redis_server.url(0)
    client = redis.Redis.from_url(url)
    client.flushall()
    yield url
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()
