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


def _members(pgid: int) -> list[psutil.Process]:
    """The processes of group `pgid` and all their descendants: torchrun starts its workers in sessions (and so
    groups) of their own, and they must end with the replica."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found[proc.pid] = proc
                found.update((child.pid, child) for child in proc.children(recursive=True))
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return list(found.values())


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group `pgid` or below it."""
    reap_children()
    return any(_running(proc) for proc in _members(pgid))


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_groups(pgids: list[int], grace_s: float) -> None:
    """SIGTERM every group (torchrun passes it on to its workers), wait up to `grace_s` for them and every process
    found below them at the start to end, then SIGKILL what is left. The processes are collected first: a worker in
    a session of its own whose parent died is re-parented, and no longer found from the group."""
    reap_children()
    tracked = {pgid: _members(pgid) for pgid in pgids}

    def left(pgid: int) -> list[psutil.Process]:
        known = {proc.pid: proc for proc in tracked[pgid] if proc.is_running()}
        known.update((proc.pid, proc) for proc in _members(pgid))
        tracked[pgid] = [proc for proc in known.values() if _running(proc)]
        return tracked[pgid]

    live = [g for g in pgids if left(g)]
    for pgid in live:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        reap_children()
        live = [g for g in live if left(g)]
    for pgid in live:
        _signal_group(pgid, signal.SIGKILL)
        for proc in tracked[pgid]:
            try:
                proc.kill()  # psutil checks the pid still names the process it found
            except psutil.Error:
                pass
