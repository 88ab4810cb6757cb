"""How `trainctl wait` (and the demo) show a job they follow: state changes and training steps.

In a terminal the steps drive a tqdm progress bar; otherwise (a pipe, a log file, the demo's output) each new step
or state is one plain line, so the output stays readable when captured.
"""

from __future__ import annotations

from typing import Any, TextIO

from tqdm import tqdm


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

    def __call__(self, job: Any, progress: dict[str, Any] | None) -> None:
        """The `on_update` of `Client.wait`."""
        self.observe(job)
        if progress:
            self.update(progress)

    def observe(self, job: Any) -> bool:
        """Show the job's state when it changed; True when it did."""
        if job["status"] == self.status:
            return False
        self.status = job["status"]
        detail = f" ({job['detail']})" if job.get("detail") else ""
        self.write(f"{self.name}: {job['status']}{detail}")
        return True

    def update(self, progress: dict[str, Any]) -> None:
        if is_newer(progress, self.seen):
            self.seen = progress
            self.progress(progress)

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


def display_for(name: str, out: TextIO, position: int | None = None) -> Display:
    """A bar in a terminal, plain lines otherwise."""
    return BarDisplay(name, out, position) if out.isatty() else Display(name, out)


def _loss(progress: dict[str, Any]) -> str:
    loss = progress.get("loss")
    return f" loss {loss:.4f}" if isinstance(loss, int | float) else ""
