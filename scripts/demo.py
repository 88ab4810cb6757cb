"""`make demo`: the whole system on this machine, end to end, in a few minutes on 2 CPU cores.

Starts its own Redis (a free port), the API under gunicorn, a Celery worker, beat and Flower (basic auth with
generated credentials) and an S3 endpoint (moto), all with `devstack`, logging to `.demo/logs/`; builds the tiny
model and a sample dataset under `.demo/`; then plays its scenes (`demo_scenes.py`): submits the sample request
(docs/examples/request.json) adapted to this machine (CPU, `gpus_per_node: 0`, the demo's storage, a few dozen
steps) for `hf`, `nemo` and `meta` with `trainctl`, showing state changes and training steps as they happen; shows
the checkpoint layout; cancels a longer run once it has a checkpoint and retries it, which resumes from that
checkpoint; kills the trainer of a run that carries a recovery policy, which the broker restarts by itself from its
checkpoint; prints where Flower and the jobs dashboard are; and stops everything it started — also on Ctrl-C or a
failure. Exit status 0 only when every job ended as expected.

Options: `--keep` leaves the services running until Ctrl-C (to explore the API and the dashboards); `--dir` puts the
demo's files elsewhere than `.demo/` (the tests use it); `--storage local` keeps the runs in a folder instead of S3.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from demo_scenes import Scenes
from demo_stack import DemoFailed, DemoStack, banner, say
from demo_storage import RunStorage

from devstack import REPO_ROOT, Exited, TimedOut

DEMO = REPO_ROOT / ".demo"


def build_inputs(root: Path, storage: RunStorage) -> tuple[Path, str]:
    """The tiny model and a 400-row dataset (kept between demos); the dataset's URI in the demo's storage."""
    banner("Building the tiny model and a sample dataset")
    model, dataset = root / "model", root / "data" / "fx.jsonl"
    if (model / "config.json").is_file() and dataset.is_file():
        say(f"reusing {model} and {dataset}")
    else:
        argv = [sys.executable, "-m", "trainer.tiny", "--out", str(model), "--dataset", str(dataset), "--rows", "400"]
        subprocess.run(argv, cwd=REPO_ROOT, check=True, timeout=300, stdout=subprocess.DEVNULL,
                       stderr=subprocess.STDOUT)
        say(f"built the tiny model in {model} and 400 rows of text in {dataset}")
    dataset_uri = storage.dataset_uri(dataset)
    say(f"dataset_uri: {dataset_uri}")
    return model, dataset_uri


def fresh_demo_dir(root: Path) -> None:
    """Remove the previous demo's state (runs, jobs, logs) but keep the built tiny model and dataset."""
    for name in ("runs", "jobs", "logs", "requests", "celerybeat-schedule", "env"):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for name in ("logs", "jobs", "runs"):
        (root / name).mkdir(parents=True, exist_ok=True)


def keep_running(stack: DemoStack) -> None:
    say(f"services keep running (source {stack.dir / 'env'} to use trainctl); press Ctrl-C to stop them")
    try:
        while True:
            stack.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        return


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def play(stack: DemoStack, keep: bool) -> list[tuple[str, bool, str]]:
    """Start the services, play every scene; the results so far, whatever happens."""
    results: list[tuple[str, bool, str]] = []
    try:
        stack.start()
        scenes = Scenes(stack, *build_inputs(stack.dir, stack.storage))
        results = scenes.results
        scenes.train_all()
        scenes.show_checkpoints()
        scenes.cancel_and_retry()
        scenes.recover_automatically()
        scenes.show_dashboards()
        if keep:
            keep_running(stack)
    except (DemoFailed, Exited, TimedOut) as exc:
        results.append(("demo", False, str(exc)))
        say(f"FAIL {exc}")
    except KeyboardInterrupt:
        results.append(("demo", False, "interrupted"))
        say("interrupted")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the services running until Ctrl-C at the end")
    parser.add_argument("--dir", type=Path, default=DEMO, help="the demo's folder (default: .demo/)")
    parser.add_argument("--storage", choices=("s3", "local"), default="s3",
                        help="s3: an S3 endpoint (moto) started for the demo (default); local: a folder under --dir")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)  # also when started with SIGINT ignored (a background job)
    if not shutil.which("redis-server") and not Path("/usr/bin/redis-server").is_file():
        print("make demo: redis-server is not on the PATH; install it (Debian: apt-get install redis-server)")
        return 2
    root = args.dir.resolve()
    fresh_demo_dir(root)
    stack = DemoStack(root, args.storage)
    try:
        results = play(stack, args.keep)
    finally:
        banner("Stopping everything the demo started")
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave processes behind
            signal.signal(signum, signal.SIG_IGN)
        stack.stop()
    return summary(results)


def summary(results: list[tuple[str, bool, str]]) -> int:
    banner("Summary")
    for _, ok, line in results:
        print(("OK   " if ok else "FAIL ") + line, flush=True)
    failed = [line for _, ok, line in results if not ok]
    print("demo: every job ended as expected" if results and not failed else f"demo: {len(failed)} problem(s)")
    return 0 if results and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
