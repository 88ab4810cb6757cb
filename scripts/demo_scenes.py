"""The demo's scenes, in the order `make demo` plays them: train every framework, show the checkpoint layout, cancel
and retry (the retry resumes), an automatic recovery (the trainer killed mid-run, attempt 2 resumes by itself), and
where the dashboards are. Each scene goes through the API as a user would: `trainctl` and its Python client."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from demo_stack import DemoFailed, DemoStack, banner, say
from demo_storage import layout

from devstack import wait_for
from devstack.samples import sample_request
from trainctl import Client, TrainerError
from trainctl.client import Job
from trainctl.display import BarDisplay, Display

PHASE_TIMEOUT_S = 900
#: framework -> nodes. meta runs on two nodes (two torchrun agents rendezvousing on localhost, FSDP over gloo).
FRAMEWORKS = {"hf": 1, "nemo": 1, "meta": 2}
TRAIN_ARGS = {"max_steps": 30, "save_steps": 10, "logging_steps": 5, "lr": 1e-3, "batch_size": 8, "block_size": 64}
#: The run that is cancelled and retried: long enough to be caught between two checkpoints.
LONG_ARGS = {**TRAIN_ARGS, "max_steps": 500, "save_steps": 30, "logging_steps": 10}
#: The recovered run: two attempts in all, a short backoff; killed just after its first checkpoint (step 20 of 60).
RECOVERY = {"max_attempts": 2, "backoff_s": 3}
RECOVERY_ARGS = {**TRAIN_ARGS, "max_steps": 60, "save_steps": 20, "logging_steps": 10}


class TimedDisplay(Display):
    """The CLI's plain-line display, with the demo's elapsed-time prefix."""

    def write(self, line: str) -> None:
        say(line)


def displays(names: list[str]) -> dict[str, Display]:
    """Stacked progress bars in a terminal, timestamped lines otherwise."""
    if sys.stdout.isatty():
        return {name: BarDisplay(name, sys.stdout, position=i) for i, name in enumerate(names)}
    return {name: TimedDisplay(name, sys.stdout) for name in names}


class Scenes:
    def __init__(self, stack: DemoStack, model: Path, dataset_uri: str) -> None:
        self.stack, self.model, self.dataset_uri = stack, model, dataset_uri
        self.client = Client(stack.api_url, stack.token, timeout_s=15)
        self.results: list[tuple[str, bool, str]] = []
        self.run_id = sample_request()["run_id"]

    # --- helpers ---

    def request(self, framework: str, run_id: str, extra: dict[str, Any], **fields: Any) -> Path:
        """The sample request (docs/examples/request.json) adapted to this machine, written where trainctl reads it:
        CPU only, the tiny model, the demo's storage, a few dozen steps."""
        body = sample_request(framework=framework, model_id=str(self.model), num_nodes=FRAMEWORKS[framework],
                              gpus_per_node=0, cpus_per_node=1, memory_per_node_gb=2, run_id=run_id,
                              checkpoint_base_uri=self.stack.storage.base_uri, dataset_uri=self.dataset_uri,
                              extra_args=extra, **fields)
        path = self.stack.dir / "requests" / f"{framework}-{run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body, indent=2))
        return path

    def submit(self, request: Path) -> str:
        return self.stack.trainctl("submit", str(request)).split()[0]

    def watch(self, names: list[str], done: Callable[[Job], bool] | None = None) -> dict[str, Job]:
        """Poll until every job is done (terminal, by default), showing each state change and training step."""
        finished = done or (lambda job: bool(job.get("terminal")))
        shown = displays(names)
        final: dict[str, Job] = {}

        def all_done() -> bool:
            self.stack.check_alive()
            for name in (n for n in names if n not in final):
                job, progress = self.client.look(name)
                shown[name](job, progress)
                if finished(job):
                    final[name] = job
            return len(final) == len(names)

        try:
            wait_for(all_done, PHASE_TIMEOUT_S, f"{sorted(set(names) - set(final))} to end", interval=1)
        finally:
            for display in shown.values():
                display.close()
        return final

    def wait_for_checkpoint(self, name: str, run_id: str) -> list[str]:
        """Wait for the run's first complete checkpoint (its manifest written); the manifests then."""
        checkpoints = f"{run_id}/framework=hf/checkpoints"

        def manifests() -> list[str]:
            files = self.stack.storage.files(checkpoints)
            return [p for p, _ in files if p.startswith("step-") and p.endswith(".json")]

        display = displays([name])[name]

        def has_checkpoint() -> bool:
            self.stack.check_alive()
            job, progress = self.client.look(name)
            display(job, progress)
            if job.get("terminal"):
                raise DemoFailed(f"{name} ended ({job['status']}) before its first checkpoint")
            return bool(manifests())

        try:
            wait_for(has_checkpoint, PHASE_TIMEOUT_S, f"a checkpoint of {name}", interval=0.5)
        finally:
            display.close()
        found = manifests()
        say(f"{name} has a complete checkpoint: {found}")
        return found

    def check(self, name: str, ok: bool, line: str) -> None:
        self.results.append((name, ok, line))
        say(("OK   " if ok else "FAIL ") + line)

    def record(self, name: str, job: Any, expected: str = "succeeded") -> None:
        verdict = "succeeded" if job["status"] == "succeeded" else job["status"]
        line = f"{name}: framework {job['framework']} {verdict} (attempt {job['attempt']})"
        if job["status"] != expected:
            line += f" — expected {expected}: {job.get('detail', '')}"
        self.check(name, job["status"] == expected, line)
        if job["status"] == "failed":
            self.show_log_tail(name)

    def show_log_tail(self, name: str, lines: int = 15) -> None:
        try:
            logs = self.client.logs(name, tail=lines)
        except TrainerError as exc:
            say(f"{name}: no logs ({exc})")
            return
        for entry in logs:
            print(f"  --- {name} {entry['file']} (last {lines} lines) ---", flush=True)
            print("  " + entry["text"].rstrip().replace("\n", "\n  "), flush=True)

    def check_resumed(self, name: str, attempt: int) -> None:
        say(f"$ trainctl logs {name} --tail 400 | grep 'resuming from'")
        logs = self.client.logs(name, tail=400)
        resumed = [line for entry in logs for line in entry["text"].splitlines() if "resuming from" in line]
        if resumed:
            self.check(name, True, f"{name}: attempt {attempt} {resumed[0].split(': ', 1)[-1]}")
        else:
            self.check(name, False, f"{name}: attempt {attempt} did not log 'resuming from' a checkpoint")

    # --- the scenes ---

    def train_all(self) -> None:
        banner("Training hf, nemo and meta through API → Redis → Celery → local backend → torchrun → train.py")
        names = [self.submit(self.request(fw, self.run_id, TRAIN_ARGS)) for fw in FRAMEWORKS]
        for name, job in self.watch(names).items():
            self.record(name, job)

    def show_checkpoints(self) -> None:
        banner("Checkpoint layout (one normalized layout per framework)")
        for framework in FRAMEWORKS:
            run_path = f"{self.run_id}/framework={framework}"
            print(f"{self.stack.storage.base_uri}/{run_path}/", flush=True)
            for line in layout(self.stack.storage.files(run_path), depth=1):
                print(f"  {line}", flush=True)

    def cancel_and_retry(self) -> None:
        banner("Cancel a run after its first checkpoint, then retry it: it resumes from that checkpoint")
        name = self.submit(self.request("hf", "fx_cancel_retry_demo", LONG_ARGS))
        self.wait_for_checkpoint(name, "fx_cancel_retry_demo")
        self.stack.trainctl("cancel", name)
        self.record(name, self.watch([name])[name], expected="cancelled")
        self.stack.trainctl("retry", name)
        self.stack.trainctl("wait", name, "--interval", "1", "--timeout", str(PHASE_TIMEOUT_S), check=False,
                            capture=False)  # a bar in a terminal
        retried = self.client.get(name)
        self.record(name, retried)
        self.check_resumed(name, retried["attempt"])
        self.stack.trainctl("events", name)

    def recover_automatically(self) -> None:
        banner("Automatic recovery: the trainer is killed mid-run; the broker starts attempt 2 from the checkpoint")
        run_id = "fx_recovery_demo"
        name = self.submit(self.request("hf", run_id, RECOVERY_ARGS, recovery=RECOVERY))
        self.wait_for_checkpoint(name, run_id)
        job = self.client.get(name)
        killed = self.stack.kill_trainer(job["namespace"], job["cluster_object"] or name)
        if not killed:
            raise DemoFailed(f"{name} had no trainer process left to kill (it ended first?)")
        say(f"killed the trainer of {name} with SIGKILL (pids {killed}), as when its node dies")

        def settled(job: Job) -> bool:  # ended, and no further automatic attempt is coming
            return bool(job.get("terminal")) and (job["status"] != "failed" or job["attempt"] >= RECOVERY[
                "max_attempts"] or "not retried automatically" in (job.get("detail") or ""))

        final = self.watch([name], done=settled)[name]
        self.record(name, final)
        policy = final.get("recovery") or {}
        used = policy.get("attempts_used", final["attempt"])
        self.check(name, used == 2, f"{name}: recovered automatically, {used} of {policy.get('max_attempts')} "
                                    f"attempts used (attempt 1 failed: {policy.get('last_failure', 'unknown')})")
        self.check_resumed(name, final["attempt"])
        self.stack.trainctl("events", name)

    def show_dashboards(self) -> None:
        banner("Flower, the operators' dashboard, and the jobs dashboard")
        user, password = self.stack.flower_auth.split(":", 1)
        url = self.stack.flower_url
        denied = requests.get(f"{url}/api/workers", timeout=10).status_code
        allowed = requests.get(f"{url}/", auth=(user, password), timeout=10).status_code
        say(f"Flower: {url}  user {user!r} password {password!r} (without them: HTTP {denied}; with them: HTTP "
            f"{allowed})")
        say(f"Jobs dashboard: {self.stack.api_url}/ui/  (sign in with the API token {self.stack.token!r}; the jobs' "
            "curves are on their pages)")
