"""The demo's services, started with `devstack`: Redis, the API under gunicorn, a Celery worker, beat and Flower
(basic auth with generated credentials), and an S3 endpoint (moto) when the runs are stored in S3 — each in its own
process group, logging to `<dir>/logs/`. Also what the demo does as a user (`trainctl`) and as the cluster (killing
a local replica's trainer)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import psutil
from demo_storage import LocalRuns, RunStorage, S3Runs

from broker.backends.local import LocalBackend
from broker.backends.local_files import STATE_FILE, job_dir, read_json
from devstack import BIN, Service, ServiceGroup, celery_argv, free_port, gunicorn_argv, http_ok, moto_argv, redis_argv
from devstack.commands import worker_options
from devstack.redis_server import pings

T0 = time.monotonic()


class DemoFailed(Exception):
    """Something did not end as expected; the message says what."""


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def banner(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


class DemoStack:
    """Every service of one demo, on free loopback ports, with a fresh API token and Flower credentials."""

    def __init__(self, root: Path, storage: str) -> None:
        self.dir = root
        self.ports = {name: free_port() for name in ("redis", "api", "flower", "s3")}
        self.storage: RunStorage = (S3Runs(f"http://127.0.0.1:{self.ports['s3']}") if storage == "s3"
                                    else LocalRuns(root))
        self.token = secrets.token_urlsafe(16)
        self.flower_auth = f"demo:{secrets.token_urlsafe(12)}"
        self.api_url = f"http://127.0.0.1:{self.ports['api']}"
        self.flower_url = f"http://127.0.0.1:{self.ports['flower']}"
        self.services = ServiceGroup(self.dir / "logs", self.env())

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

    def start(self) -> None:
        banner("Starting Redis, the API, a worker, beat and Flower")
        if isinstance(self.storage, S3Runs):
            self._start("s3", moto_argv(self.ports["s3"]))
            self.storage.wait_ready()
        say(f"runs are stored in the {self.storage.label}")
        self._start("redis", redis_argv(self.ports["redis"], self.dir)).wait_ready(
            lambda: pings(self.env()["REDIS_URL"]), 20)
        api = self._start("api", gunicorn_argv(self.ports["api"], "-w", "2", "--timeout", "60"))
        self._start("worker", celery_argv("worker", *worker_options("demo@%h", 2, heartbeat=True)))
        self._start("beat", celery_argv("beat", "-l", "info", "-s", str(self.dir / "celerybeat-schedule")))
        flower = self._start("flower", celery_argv("flower", "--address=127.0.0.1", f"--port={self.ports['flower']}"),
                             {"FLOWER_BASIC_AUTH": self.flower_auth})
        api.wait_ready(lambda: http_ok(f"{self.api_url}/readyz"), 60)
        flower.wait_ready(lambda: http_ok(f"{self.flower_url}/healthcheck"), 60)
        env_file = self.dir / "env"
        env_file.write_text(f"export TRAINER_BASE_URL={self.api_url}\nexport TRAINER_API_TOKEN={self.token}\n")
        say(f"API ready at {self.api_url} (its URL and token: {env_file})")

    def _start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Service:
        service = self.services.start(name, argv, self.env() | (extra_env or {}))
        say(f"started {name} (pid {service.pid}), log: {service.log}")
        return service

    def check_alive(self) -> None:
        self.services.check_alive()

    def stop(self) -> None:
        """Stop the local jobs still running, then every service (the last started first)."""
        backend = LocalBackend(self.dir / "jobs", terminate_grace_s=5)
        for namespace in (p.name for p in (self.dir / "jobs").glob("*") if p.is_dir()):
            for job in backend.list(namespace, ""):
                if job["status"].get("completionTime") is None:
                    backend.delete(namespace, job["metadata"]["name"])
                    say(f"stopped local job {namespace}/{job['metadata']['name']}")
        self.services.stop(on_stopped=lambda name: say(f"stopped {name}"))

    # --- the user's view, through trainctl ---

    def trainctl(self, *args: str, check: bool = True, capture: bool = True) -> str:
        """Run `trainctl` as the user would, showing the command and what it printed."""
        say("$ trainctl " + " ".join(args))
        result = subprocess.run([str(BIN / "trainctl"), *args], env=self.env(), capture_output=capture, text=True,
                                timeout=None if not capture else 120, check=False)
        output = ((result.stdout or "") + (result.stderr or "")).rstrip()
        if output:
            print("  " + output.replace("\n", "\n  "), flush=True)
        if check and result.returncode != 0:
            raise DemoFailed(f"trainctl {' '.join(args)} exited with {result.returncode}")
        return result.stdout or ""

    # --- the cluster's view: a replica's trainer dies ---

    def kill_trainer(self, namespace: str, cluster_object: str) -> list[int]:
        """SIGKILL every process under the local job's replica supervisors (torchrun and its workers), as when a
        node dies: the supervisors record exit 137 and the job's object fails. The pids killed."""
        state = read_json(job_dir(self.dir / "jobs", namespace, cluster_object) / STATE_FILE) or {}
        killed: list[int] = []
        for replica in state.get("replicas", []):
            try:
                children = psutil.Process(replica["pid"]).children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                try:
                    child.send_signal(signal.SIGKILL)
                    killed.append(child.pid)
                except psutil.Error:
                    pass
        return killed
