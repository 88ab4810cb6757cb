"""A tiny parent for one local replica: runs its argv, then records how it ended.

The local backend starts every replica as `python -m broker.backends.local_supervisor --exit-file F -- argv...`, in a
new session (so the supervisor leads the replica's process group and `killpg` reaches the whole tree). The
supervisor outlives the worker that started it, so the replica's exit code is written to `F` whoever restarts: the
backend reads the file instead of needing to be the process's parent.

The exit file is JSON `{"exit_code": int, "finished_at": "<RFC 3339>"}`, written atomically (temp file + rename).
A replica killed by signal N gets exit code 128 + N, as a container runtime reports it (SIGKILL 137, SIGTERM 143).
A command that cannot be started gets 127 (not found) or 126 (not executable). The supervisor only dies without
writing the file when it is itself SIGKILLed; the backend then reports the replica as vanished.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from broker.jobs import now_iso


def exit_code_of(returncode: int) -> int:
    """A Popen returncode as a container runtime reports it: negative (killed by signal N) becomes 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def write_exit_file(path: Path, exit_code: int) -> None:
    finished_at = now_iso()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"exit_code": exit_code, "finished_at": finished_at}))
    os.replace(tmp, path)


def _start(argv: list[str]) -> subprocess.Popen[bytes] | int:
    """The started child, or the exit code that reports why it could not start."""
    try:
        return subprocess.Popen(argv)
    except FileNotFoundError as exc:
        print(f"[local-supervisor] cannot start {argv[0]!r}: {exc}", file=sys.stderr, flush=True)
        return 127
    except PermissionError as exc:
        print(f"[local-supervisor] cannot execute {argv[0]!r}: {exc}", file=sys.stderr, flush=True)
        return 126


def supervise(argv: list[str], exit_file: Path) -> int:
    """Run `argv` to its end, forwarding SIGTERM/SIGINT, and record its exit code in `exit_file`."""
    child = _start(argv)
    if isinstance(child, int):
        write_exit_file(exit_file, child)
        return child

    def forward(signum: int, _frame: FrameType | None) -> None:
        # The group usually got the signal too; forwarding covers a signal sent to the supervisor alone.
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = exit_code_of(child.wait())
    write_exit_file(exit_file, code)
    print(f"[local-supervisor] replica exited with code {code}", file=sys.stderr, flush=True)
    return code


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--exit-file", required=True, type=Path)
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the replica's command and arguments")
    ns = parser.parse_args(args)
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    if not argv:
        parser.error("no command given")
    return supervise(argv, ns.exit_file)


if __name__ == "__main__":
    raise SystemExit(main())
