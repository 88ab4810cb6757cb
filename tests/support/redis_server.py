"""A throwaway `redis-server` for tests: its own port, no persistence (or AOF `everysec` on request), stopped at the
end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process. `url(db)` gives a client URL; `stop()`/`kill9()`/`start()` let a test fault it.
    With `aof=True` it keeps an append-only file (`appendfsync everysec`) in its directory, so a restart on the same
    port finds its data again."""

    def __init__(self, *, aof: bool = False) -> None:
        self.aof = aof
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tb-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.dir), "--databases", "16",
                *(["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof else ["--appendonly", "no"])]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url())
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL the server: no shutdown save, no final fsync (what is in the AOF file is what survives)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
