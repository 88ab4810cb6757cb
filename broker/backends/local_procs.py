"""Process bookkeeping for the local backend, on psutil: liveness that survives restarts, and process-group
termination.

A replica is known by its supervisor's pid and that process's creation time, so a recycled pid is never taken for
the replica. Zombies count as ended.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

#: Supervisors this process started: reaped on every backend call so they do not linger as zombies.
_spawned: set[int] = set()
_ENDED = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


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


def start_time(pid: int) -> float | None:
    """When `pid` was created (epoch seconds, as psutil reports it), or None when it does not exist."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() not in _ENDED
    except psutil.Error:
        return False


def is_alive(pid: int, started: float | None) -> bool:
    """True while the process that was `pid` (created at `started`) is still running and not a zombie."""
    reap_children()
    try:
        proc = psutil.Process(pid)
        same = started is None or proc.create_time() == started
    except psutil.Error:
        return False
    return same and _running(proc)


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group `pgid`."""
    reap_children()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and _running(proc):
                return True
        except (ProcessLookupError, PermissionError):
            continue
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
