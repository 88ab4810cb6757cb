"""`trainctl wait`: poll a job's status and `/progress` until it ends, showing state changes and training steps.

In a terminal the steps drive a tqdm progress bar; otherwise (a pipe, a log file, the demo's output) each new step
or state is one plain line, so the output stays readable when captured.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from broker.jobs import TERMINAL, JobStatus

if TYPE_CHECKING:
    from api.cli import Client


def is_newer(progress: dict[str, Any], seen: dict[str, Any] | None) -> bool:
    """True when `progress` is a later report than `seen` (by `updated_at`; API replicas may cache different ones)."""
    if seen is None:
        return True
    return str(progress.get("updated_at", "")) >= str(seen.get("updated_at", "")) and progress != seen


class Display:
    """Plain lines: one per state change and one per new training step."""

    def __init__(self, name: str, out: TextIO) -> None:
        self.name, self.out = name, out
        self.last_step: int | None = None
        self.seen: dict[str, Any] | None = None
        self.status: str | None = None

    def observe(self, job: dict[str, Any]) -> bool:
        """Show the job's state when it changed; True when it did."""
        if job["status"] == self.status:
            return False
        self.status = job["status"]
        self.state(job)
        return True

    def update(self, progress: dict[str, Any]) -> None:
        if is_newer(progress, self.seen):
            self.seen = progress
            self.progress(progress)

    def state(self, job: dict[str, Any]) -> None:
        detail = f" ({job['detail']})" if job.get("detail") else ""
        self.write(f"{self.name}: {job['status']}{detail}")

    def progress(self, progress: dict[str, Any]) -> None:
        step = progress.get("step")
        if step is None or step == self.last_step:
            return
        self.last_step = step
        self.write(f"{self.name}: step {step}/{progress.get('total_steps', '?')}{_loss(progress)}")

    def write(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def close(self) -> None:
        return None


class BarDisplay(Display):
    """A tqdm bar fed by `/progress`; state changes are printed above it. `position` stacks several bars."""

    def __init__(self, name: str, out: TextIO, position: int | None = None) -> None:
        super().__init__(name, out)
        self.bar: tqdm[Any] | None = None
        self.position = position

    def progress(self, progress: dict[str, Any]) -> None:
        step, total = progress.get("step"), progress.get("total_steps")
        if not isinstance(step, int):
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.name, unit="step", file=self.out, dynamic_ncols=True,
                            position=self.position)
        self.bar.n = step
        if progress.get("loss") is not None:
            self.bar.set_postfix(loss=f"{progress['loss']:.4f}", refresh=False)
        self.bar.refresh()

    def write(self, line: str) -> None:
        tqdm.write(line, file=self.out)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _loss(progress: dict[str, Any]) -> str:
    loss = progress.get("loss")
    return f" loss {loss:.4f}" if isinstance(loss, int | float) else ""


def fetch_progress(client: Client, name: str) -> dict[str, Any] | None:
    """The job's progress, or None while there is none yet (404) or storage is unavailable (503)."""
    from api.cli import EXIT_REFUSED, CliError

    try:
        body = client.get(f"/train/{name}/progress")
    except CliError as exc:
        if exc.exit_code == EXIT_REFUSED:
            return None
        raise
    return body.get("progress", body) if isinstance(body, dict) else None


def poll(client: Client, name: str, display: Display) -> dict[str, Any]:
    """One look at the job: its state, and its progress while it runs. Returns the job."""
    job: dict[str, Any] = client.get(f"/train/{name}")
    display.observe(job)
    if job["status"] in (JobStatus.RUNNING, *TERMINAL):
        progress = fetch_progress(client, name)
        if progress:
            display.update(progress)
    return job


def wait_for_job(client: Client, name: str, interval_s: float, timeout_s: float | None, out: TextIO) -> int:
    """Poll until the job is terminal; 0 when it succeeded, 1 when it failed, was cancelled or timed out."""
    display: Display = BarDisplay(name, out) if out.isatty() else Display(name, out)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            job = poll(client, name, display)
            if job["status"] in TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                display.write(f"{name}: still {job['status']} after {timeout_s:g}s; giving up")
                return 1
            time.sleep(interval_s)
    finally:
        display.close()
    verdict = "succeeded" if job["status"] == JobStatus.SUCCEEDED else f"did not succeed: {job['status']}"
    print(f"{name}: framework {job.get('framework')} {verdict} (attempt {job.get('attempt')})", file=out, flush=True)
    return 0 if job["status"] == JobStatus.SUCCEEDED else 1
