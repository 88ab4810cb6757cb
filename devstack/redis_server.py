"""A throwaway `redis-server`: its own port, no persistence (or AOF `everysec` on request), stopped at the end."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import redis

from devstack.commands import redis_argv
from devstack.procs import Service, free_port


def pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


class RedisServer:
    """One redis-server process. `url(db)` gives a client URL; `stop()`/`kill9()`/`start()` let a test fault it.
    With `aof=True` it keeps an append-only file (`appendfsync everysec`) in its directory, so a restart on the same
    port finds its data again."""

    def __init__(self, *, aof: bool = False, data_dir: Path | None = None, port: int | None = None) -> None:
        self.aof = aof
        self.port = port or free_port()
        self.dir = data_dir or Path(tempfile.mkdtemp(prefix="tb-redis-"))
        self.service: Service | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.service = Service("redis", redis_argv(self.port, self.dir, aof=self.aof), os.environ,
                               self.dir / "redis.log").start()
        self.service.wait_ready(lambda: pings(self.url()), timeout)
        return self

    def kill9(self) -> None:
        """SIGKILL the server: no shutdown save, no final fsync (what is in the AOF file is what survives)."""
        if self.service:
            self.service.kill9()
        self.service = None

    def stop(self) -> None:
        if self.service:
            self.service.stop(10)
        self.service = None

    def check_alive(self) -> None:
        if self.service:
            self.service.check_alive()
