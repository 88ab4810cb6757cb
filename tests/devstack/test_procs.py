"""devstack's process helper on real processes: a service's whole group is stopped, an exit is reported with the
log's tail, a wait names what it waited for."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from devstack import Exited, Service, ServiceGroup, TimedOut, free_port, http_ok, wait_for

#: A parent that starts a sleeping child in its own process group and then sleeps itself.
PARENT = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
          "print('started', flush=True); time.sleep(60)")


def test_stop_ends_the_whole_process_group_in_reverse_order(tmp_path: Path) -> None:
    group = ServiceGroup(tmp_path)
    first = group.start("first", [sys.executable, "-c", PARENT])
    second = group.start("second", [sys.executable, "-c", PARENT])
    wait_for(lambda: len(first.children()) == 1 and len(second.children()) == 1, 30, "the children to start")
    children = [psutil.Process(pid) for pid in first.children() + second.children()]
    stopped: list[str] = []
    group.stop(timeout=10, on_stopped=stopped.append)
    assert stopped == ["second", "first"]
    assert not first.alive() and not second.alive()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive and len(gone) == 2
    assert group.services == []


def test_an_exited_service_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    service = Service("bad", [sys.executable, "-c", "print('line one'); print('the reason'); raise SystemExit(3)"],
                      {}, tmp_path / "bad.log").start()
    with pytest.raises(Exited, match=r"bad exited with code 3; its log ends:\n  line one\n  the reason"):
        service.wait_ready(lambda: False, timeout=30)


def test_kill9_takes_the_group_down_at_once(tmp_path: Path) -> None:
    service = Service("parent", [sys.executable, "-c", PARENT], {}, tmp_path / "p.log").start()
    wait_for(lambda: service.children(), 30, "the child to start")
    child = psutil.Process(service.children()[0])
    service.kill9()
    assert service.proc is not None and service.proc.returncode == -9
    assert not psutil.wait_procs([child], timeout=10)[1]


def test_a_wait_that_runs_out_names_what_it_waited_for() -> None:
    with pytest.raises(TimedOut, match="timed out after 0.2s waiting for the moon"):
        wait_for(lambda: False, 0.2, "the moon")
    assert wait_for(lambda: 42, 1, "an answer") == 42


def test_http_ok_is_false_where_nothing_listens() -> None:
    assert http_ok(f"http://127.0.0.1:{free_port()}/healthz") is False
