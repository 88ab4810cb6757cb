"""Process bookkeeping for the local backend: liveness that survives restarts, and process-group termination.

A replica is known by its supervisor's pid and the kernel's start time of that pid (`/proc/<pid>/stat` field 22),
so a recycled pid is never taken for the replica. Zombies count as ended. On systems without `/proc` the start time
is unknown and liveness falls back to `kill(pid, 0)`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")
#: Supervisors this process started: reaped on every backend call so they do not linger as zombies.
_spawned: set[int] = set()


def remember_child(pid: int) -> None:
    _spawned.add(pid)


def reap_children() -> None:
    for pid in list(_spawned):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _spawned.discard(pid)


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of `/proc/<pid>/stat` (state first), or None when the process does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` in clock ticks, or None when unknown."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, ticks: int | None) -> bool:
    """True while the process that was `pid` (started at `ticks`) is still running and not a zombie."""
    reap_children()
    if not _PROC.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group `pgid`."""
    reap_children()
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
    return False


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_groups(pgids: list[int], grace_s: float) -> None:
    """SIGTERM every group, wait up to `grace_s` for them to end, then SIGKILL what is left."""
    live = [g for g in pgids if group_alive(g)]
    for pgid in live:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = [g for g in live if group_alive(g)]
    for pgid in live:
        _signal_group(pgid, signal.SIGKILL)
