"""`make demo`: the whole system on this machine, end to end, in a few minutes on 2 CPU cores.

Starts its own Redis (a free port), the API under gunicorn, a Celery worker, beat and Flower (basic auth with
generated credentials), all as subprocesses in their own process groups, logging to `.demo/logs/`; builds the tiny
model and a sample dataset under `.demo/`; submits the seed's sample request adapted to this machine (CPU,
`gpus_per_node: 0`, local storage under `.demo/runs`, a few dozen steps) for `hf`, `nemo` and `meta` through the API
with `trainctl`; shows state changes and training steps as they happen; shows the checkpoint layout; cancels a
longer run once it has a checkpoint and retries it, which resumes from that checkpoint; prints where Flower is; and
stops everything it started — also on Ctrl-C or a failure. Exit status 0 only when every job ended as expected.

Options: `--keep` leaves the services running until Ctrl-C (to explore the API and Flower); `--dir` puts the demo's
files elsewhere than `.demo/` (the tests use it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
from demo_storage import LocalRuns, RunStorage, S3Runs, layout

from broker.backends.local import LocalBackend
from trainctl import Client, TrainerError
from trainctl.display import BarDisplay, Display

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".demo"
BIN = Path(sys.executable).parent
T0 = time.monotonic()
PHASE_TIMEOUT_S = 900

#: The product's sample request (8B model, 2 nodes x 8 GPUs): the demo only adapts what this machine cannot do.
SEED_SAMPLE: dict[str, Any] = {
    "framework": "nemo",
    "model_id": "nemotron-8b-fx",
    "num_nodes": 2,
    "gpus_per_node": 8,
    "cpus_per_node": 48,
    "memory_per_node_gb": 512,
    "image": "ghcr.io/deepfinery/trainer:latest",
    "run_id": "fx_ruleset_v3_2025_11_26_01",
    "checkpoint_base_uri": "s3://deepfinery-training/runs",
    "dataset_uri": "s3://deepfinery-datasets/fx/v3/",
    "resume_from_checkpoint": True,
    "extra_args": {"max_steps": 50000, "lr": 3e-5, "batch_size": 128},
}
#: framework -> nodes. meta runs on two nodes (two torchrun agents rendezvousing on localhost, FSDP over gloo).
FRAMEWORKS = {"hf": 1, "nemo": 1, "meta": 2}
TRAIN_ARGS = {"max_steps": 30, "save_steps": 10, "logging_steps": 5, "lr": 1e-3, "batch_size": 8, "block_size": 64}
#: The run that is cancelled and retried: long enough to be caught between two checkpoints.
LONG_ARGS = {**TRAIN_ARGS, "max_steps": 500, "save_steps": 30, "logging_steps": 10}


class TimedDisplay(Display):
    """The CLI's plain-line display, with the demo's elapsed-time prefix."""

    def write(self, line: str) -> None:
        say(line)


class DemoFailed(Exception):
    """Something did not end as expected; the message says what."""


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def banner(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, services: Services | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if services:
            services.check_alive()
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.5)


# --- the services --------------------------------------------------------------------------------------------


class Services:
    """Every process the demo starts, each in its own process group with its log under `.demo/logs/`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        say(f"started {name} (pid {proc.pid}), log: {self.log_dir / f'{name}.log'}")

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise DemoFailed(f"{name} exited with code {proc.returncode}; its log ends:\n  " + "\n  ".join(tail))

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
            say(f"stopped {name}")
        self.procs.clear()


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Demo:
    def __init__(self, root: Path, storage: str) -> None:
        self.dir = root
        self.ports = {name: free_port() for name in ("redis", "api", "flower", "s3")}
        self.storage: RunStorage = (S3Runs(f"http://127.0.0.1:{self.ports['s3']}") if storage == "s3"
                                    else LocalRuns(root))
        self.token = secrets.token_urlsafe(16)
        self.flower_auth = f"demo:{secrets.token_urlsafe(12)}"
        self.api_url = f"http://127.0.0.1:{self.ports['api']}"
        self.flower_url = f"http://127.0.0.1:{self.ports['flower']}"
        self.services = Services(self.dir / "logs")
        self.client = Client(self.api_url, self.token, timeout_s=15)
        self.results: list[tuple[str, bool, str]] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "KUBE"))}
        return env | {
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "TRAINER_API_TOKEN": self.token,
            "TRAINER_BASE_URL": self.api_url,
            "TRAINER_CLUSTER_BACKEND": "local",
            "TRAINER_LOCAL_WORKDIR": str(self.dir / "jobs"),
            "TRAINER_LOCAL_TERMINATE_GRACE_S": "10",
            "TRAINER_SYNC_INTERVAL_S": "1",
            "TRAINER_NAMESPACE": "default",
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # Local replicas inherit only what is named here: the demo's S3 (moto) endpoint and its demo keys.
            "TRAINER_LOCAL_REPLICA_ENV": "AWS_ENDPOINT_URL,AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY,AWS_DEFAULT_REGION",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        } | self.storage.env()

    # --- setup ---

    def start_services(self) -> None:
        banner("Starting Redis, the API, a worker, beat and Flower")
        env, celery = self.env(), str(BIN / "celery")
        if isinstance(self.storage, S3Runs):
            self.services.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["s3"])], env)
            self.storage.wait_ready()
        say(f"runs are stored in the {self.storage.label}")
        redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.services.start("redis", [redis_bin, "--port", str(self.ports["redis"]), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.dir)], env)
        client = redis.Redis.from_url(env["REDIS_URL"])
        wait_until("Redis", lambda: _pings(client), 20, self.services)
        self.services.start("api", [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{self.ports['api']}", "-w", "2",
                                    "--timeout", "60", "api.app:create_app()"], env)
        self.services.start("worker", [celery, "-A", "broker.celery_app", "worker", "-l", "info", "-c", "2",
                                       "-n", "demo@%h", "--without-gossip", "--without-mingle"], env)
        self.services.start("beat", [celery, "-A", "broker.celery_app", "beat", "-l", "info",
                                     "-s", str(self.dir / "celerybeat-schedule")], env)
        self.services.start("flower", [celery, "-A", "broker.celery_app", "flower", "--address=127.0.0.1",
                                       f"--port={self.ports['flower']}"], env | {"FLOWER_BASIC_AUTH": self.flower_auth})
        wait_until("the API to be ready", lambda: _ok(f"{self.api_url}/readyz"), 60, self.services)
        wait_until("Flower", lambda: _ok(f"{self.flower_url}/healthcheck"), 60, self.services)
        env_file = self.dir / "env"
        env_file.write_text(f"export TRAINER_BASE_URL={self.api_url}\nexport TRAINER_API_TOKEN={self.token}\n")
        say(f"API ready at {self.api_url} (its URL and token: {env_file})")

    def build_inputs(self) -> tuple[Path, str]:
        banner("Building the tiny model and a sample dataset")
        model, dataset = self.dir / "model", self.dir / "data" / "fx.jsonl"
        if (model / "config.json").is_file() and dataset.is_file():
            say(f"reusing {model} and {dataset}")
        else:
            argv = [sys.executable, "-m", "trainer.tiny", "--out", str(model), "--dataset", str(dataset), "--rows",
                    "400"]
            subprocess.run(argv, cwd=REPO, check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            say(f"built the tiny model in {model} and 400 rows of text in {dataset}")
        dataset_uri = self.storage.dataset_uri(dataset)
        say(f"dataset_uri: {dataset_uri}")
        return model, dataset_uri

    def request(self, framework: str, run_id: str, model: Path, dataset: str, extra: dict[str, Any]) -> Path:
        body = {
            **SEED_SAMPLE,
            "framework": framework,
            "model_id": str(model),
            "num_nodes": FRAMEWORKS[framework],
            "gpus_per_node": 0,
            "cpus_per_node": 1,
            "memory_per_node_gb": 2,
            "run_id": run_id,
            "checkpoint_base_uri": self.storage.base_uri,
            "dataset_uri": dataset,
            "extra_args": extra,
        }
        path = self.dir / "requests" / f"{framework}-{run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body, indent=2))
        return path

    # --- the user's view, through trainctl ---

    def trainctl(self, *args: str, check: bool = True) -> str:
        argv = [str(BIN / "trainctl"), *args]
        say("$ trainctl " + " ".join(args))
        result = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=120, check=False)
        output = (result.stdout + result.stderr).rstrip()
        if output:
            print("  " + output.replace("\n", "\n  "), flush=True)
        if check and result.returncode != 0:
            raise DemoFailed(f"trainctl {' '.join(args)} exited with {result.returncode}")
        return result.stdout

    def submit(self, request: Path) -> str:
        return self.trainctl("submit", str(request)).split()[0]

    def watch(self, names: list[str], timeout_s: float = PHASE_TIMEOUT_S) -> dict[str, Any]:
        """Poll until every job is terminal, showing each state change and each new training step."""
        displays = self.displays(names)
        final: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        try:
            while len(final) < len(names):
                self.services.check_alive()
                if time.monotonic() > deadline:
                    raise DemoFailed(f"jobs still running after {timeout_s:g}s: {sorted(set(names) - set(final))}")
                for name in names:
                    if name not in final:
                        job, progress = self.client.look(name)
                        displays[name](job, progress)
                        if job.get("terminal"):
                            final[name] = job
                time.sleep(1)
        finally:
            for display in displays.values():
                display.close()
        return final

    @staticmethod
    def displays(names: list[str]) -> dict[str, Display]:
        """Stacked progress bars in a terminal, timestamped lines otherwise."""
        if sys.stdout.isatty():
            return {name: BarDisplay(name, sys.stdout, position=i) for i, name in enumerate(names)}
        return {name: TimedDisplay(name, sys.stdout) for name in names}

    def record(self, name: str, job: Any, expected: str = "succeeded") -> None:
        ok = job["status"] == expected
        verdict = "succeeded" if job["status"] == "succeeded" else job["status"]
        line = f"{name}: framework {job['framework']} {verdict} (attempt {job['attempt']})"
        if not ok:
            line += f" — expected {expected}: {job.get('detail', '')}"
        self.results.append((name, ok, line))
        say(("OK   " if ok else "FAIL ") + line)
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

    # --- the scenes ---

    def train_all(self, model: Path, dataset: str) -> None:
        banner("Training hf, nemo and meta through API → Redis → Celery → local backend → torchrun → train.py")
        names = [self.submit(self.request(fw, SEED_SAMPLE["run_id"], model, dataset, TRAIN_ARGS)) for fw in FRAMEWORKS]
        for name, job in self.watch(names).items():
            self.record(name, job)

    def show_checkpoints(self) -> None:
        banner("Checkpoint layout (one normalized layout per framework)")
        for framework in FRAMEWORKS:
            run_path = f"{SEED_SAMPLE['run_id']}/framework={framework}"
            print(f"{self.storage.base_uri}/{run_path}/", flush=True)
            for line in layout(self.storage.files(run_path), depth=1):
                print(f"  {line}", flush=True)

    def cancel_and_retry(self, model: Path, dataset: str) -> None:
        banner("Cancel a run after its first checkpoint, then retry it: it resumes from that checkpoint")
        request = self.request("hf", "fx_cancel_retry_demo", model, dataset, LONG_ARGS)
        name = self.submit(request)
        checkpoints = "fx_cancel_retry_demo/framework=hf/checkpoints"

        def manifests() -> list[str]:
            return [p for p, _ in self.storage.files(checkpoints) if p.startswith("step-") and p.endswith(".json")]
        display = self.displays([name])[name]

        def has_checkpoint() -> bool:
            job, progress = self.client.look(name)
            display(job, progress)
            if job.get("terminal"):
                raise DemoFailed(f"{name} ended ({job['status']}) before it could be cancelled")
            return bool(manifests())

        try:
            wait_until(f"a checkpoint of {name}", has_checkpoint, PHASE_TIMEOUT_S, self.services)
        finally:
            display.close()
        say(f"{name} has a complete checkpoint: {manifests()}")
        self.trainctl("cancel", name)
        cancelled = self.watch([name])[name]
        self.record(name, cancelled, expected="cancelled")
        self.trainctl("retry", name)
        wait_args = ["wait", name, "--interval", "1", "--timeout", str(PHASE_TIMEOUT_S)]
        say("$ trainctl " + " ".join(wait_args))
        subprocess.run([str(BIN / "trainctl"), *wait_args], env=self.env(), check=False)  # a bar in a terminal
        retried = self.client.get(name)
        self.record(name, retried)
        self.check_resumed(name, retried["attempt"])
        self.trainctl("events", name)

    def check_resumed(self, name: str, attempt: int) -> None:
        say(f"$ trainctl logs {name} --tail 400 | grep 'resuming from'")
        logs = self.client.logs(name, tail=400)
        resumed = [line for entry in logs for line in entry["text"].splitlines() if "resuming from" in line]
        if resumed:
            line = f"{name}: attempt {attempt} {resumed[0].split(': ', 1)[-1]}"
        else:
            line = f"{name}: attempt {attempt} did not log 'resuming from' a checkpoint"
        self.results.append((name, bool(resumed), line))
        say(("OK   " if resumed else "FAIL ") + line)

    def show_flower(self) -> None:
        banner("Flower, the operators' dashboard")
        user, password = self.flower_auth.split(":", 1)
        denied = requests.get(f"{self.flower_url}/api/workers", timeout=10).status_code
        allowed = requests.get(f"{self.flower_url}/", auth=(user, password), timeout=10).status_code
        say(f"Flower: {self.flower_url}  user {user!r} password {password!r} (without them: HTTP {denied}; "
            f"with them: HTTP {allowed})")
        say(f"Jobs dashboard: {self.api_url}/ui/  (sign in with the API token {self.token!r}; the jobs' curves are "
            "on their pages)")

    def stop_local_jobs(self) -> None:
        backend = LocalBackend(self.dir / "jobs", terminate_grace_s=5)
        for namespace in (p.name for p in (self.dir / "jobs").glob("*") if p.is_dir()):
            for job in backend.list(namespace, ""):
                if job["status"].get("completionTime") is None:
                    backend.delete(namespace, job["metadata"]["name"])
                    say(f"stopped local job {namespace}/{job['metadata']['name']}")


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


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


def keep_running(demo: Demo) -> None:
    say(f"services keep running (source {demo.dir / 'env'} to use trainctl); press Ctrl-C to stop them")
    try:
        while True:
            demo.services.check_alive()
            time.sleep(2)
    except KeyboardInterrupt:
        return


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
    demo = Demo(root, args.storage)
    try:
        demo.start_services()
        model, dataset = demo.build_inputs()
        demo.train_all(model, dataset)
        demo.show_checkpoints()
        demo.cancel_and_retry(model, dataset)
        demo.show_flower()
        if args.keep:
            keep_running(demo)
    except DemoFailed as exc:
        demo.results.append(("demo", False, str(exc)))
        say(f"FAIL {exc}")
    except KeyboardInterrupt:
        demo.results.append(("demo", False, "interrupted"))
        say("interrupted")
    finally:
        banner("Stopping everything the demo started")
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not leave processes behind
            signal.signal(signum, signal.SIG_IGN)
        demo.stop_local_jobs()
        demo.services.stop()
    return summary(demo.results)


def summary(results: list[tuple[str, bool, str]]) -> int:
    banner("Summary")
    for _, ok, line in results:
        print(("OK   " if ok else "FAIL ") + line, flush=True)
    failed = [line for _, ok, line in results if not ok]
    print("demo: every job ended as expected" if results and not failed else f"demo: {len(failed)} problem(s)")
    return 0 if results and not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
