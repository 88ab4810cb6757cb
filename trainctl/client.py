"""The Training Broker's Python SDK: a small typed client of its HTTP API, and nothing else.

    from trainctl import Client
    client = Client.from_env()                      # TRAINER_BASE_URL, TRAINER_API_TOKEN
    job = client.submit(request)                    # a TrainingJobRequest as a dict
    job = client.wait(job["name"], interval_s=5)    # until the API says the job is terminal

It never touches Redis or the cluster, and needs only `requests`. Whether a job has ended comes from the API (the
status's `terminal` field), not from a list kept here. Errors: `ApiRefused` (the API answered 4xx/5xx; its code,
message and fields), `ApiUnreachable` (no answer), `WaitTimeout`.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict, overload

import requests

DEFAULT_URL = "http://127.0.0.1:8080"
TOKEN_HEADER = "X-TRAINER-TOKEN"
#: How long a dry run may take at least: the API waits up to TRAINER_DRY_RUN_TIMEOUT_S (30 s by default) for a worker.
DRY_RUN_TIMEOUT_S = 45.0


class Job(TypedDict, total=False):
    """A `TrainingJobStatus` as the API answers it (see docs/API_SPEC.md)."""

    name: str
    status: str
    terminal: bool
    detail: str
    framework: str
    run_id: str
    namespace: str
    attempt: int
    checkpoint_prefix: str
    cluster_object: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    queue: dict[str, Any] | None
    recovery: dict[str, Any]


class JobPage(TypedDict):
    jobs: list[Job]
    next_cursor: str | None


class Queue(TypedDict):
    """`GET /queue`: a namespace's waiting jobs, first in line first, each with its `queue` object."""

    namespace: str
    admission: str
    jobs: list[Job]


class DryRun(TypedDict, total=False):
    """`POST /train?dry_run=true`: what the cluster and the admission would say; nothing is stored."""

    dry_run: bool
    valid: bool
    job_name: str
    namespace: str
    object: dict[str, Any]
    cluster: dict[str, Any]
    admission: dict[str, Any]
    existing: dict[str, Any] | None
    error: dict[str, Any]


class TrainerError(Exception):
    """Base of the client's errors."""


class ApiUnreachable(TrainerError):
    """The API did not answer."""


class ApiRefused(TrainerError):
    """The API answered with an error: `status`, and its body's `code`, `message` and `fields`."""

    def __init__(self, response: requests.Response) -> None:
        try:
            error = response.json().get("error", {})
        except (ValueError, AttributeError):
            error = {}
        self.status = response.status_code
        self.code = str(error.get("code", "")) if isinstance(error, dict) else ""
        self.fields: dict[str, Any] = (error.get("fields") or {}) if isinstance(error, dict) else {}
        super().__init__(_describe(response, error if isinstance(error, dict) else {}))


class WaitTimeout(TrainerError):
    """The job was still not terminal when the wait's timeout ran out. `job` is its last state."""

    def __init__(self, job: Job, timeout_s: float) -> None:
        super().__init__(f"{job.get('name')}: still {job.get('status')} after {timeout_s:g}s")
        self.job = job


def _describe(response: requests.Response, error: dict[str, Any]) -> str:
    """`<status> <code>: <message> (field: problem; …)` from the API's error body, whatever its shape."""
    if not error:
        return f"{response.status_code} {response.reason}: {response.text.strip()[:200]}"
    line = f"{response.status_code} {error.get('code', 'error')}: {error.get('message', '')}"
    fields = error.get("fields") or {}
    if fields:
        line += " (" + "; ".join(f"{k}: {_flatten(v)}" for k, v in fields.items()) + ")"
    return line


def _flatten(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_flatten(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    return str(value)


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    base_url: str = DEFAULT_URL
    """TRAINER_BASE_URL: where the API listens."""
    token: str = ""
    """TRAINER_API_TOKEN: sent as X-TRAINER-TOKEN (the first one when the variable lists several)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if environ is None else environ
        token = (env.get("TRAINER_API_TOKEN") or "").split(",")[0].strip()
        return cls(base_url=env.get("TRAINER_BASE_URL") or DEFAULT_URL, token=token)


#: `on_update(job, progress)`: called after every look at a waited job (progress None when there is none yet).
OnUpdate = Callable[[Job, "dict[str, Any] | None"], None]


class Client:
    """The API over HTTP. Every method returns the decoded answer or raises a `TrainerError`."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str = "", *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        if token:
            self.session.headers[TOKEN_HEADER] = token

    @classmethod
    def from_env(cls, *, base_url: str | None = None, token: str | None = None, timeout_s: float = 10.0) -> Client:
        settings = ClientSettings.from_env()
        return cls(base_url or settings.base_url, token or settings.token, timeout_s=timeout_s)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, f"{self.base_url}{path}", timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise ApiUnreachable(f"cannot reach the API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ApiRefused(response)
        try:
            return response.json()
        except ValueError as exc:
            raise TrainerError(f"the API at {self.base_url} answered something that is not JSON") from exc

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params={k: v for k, v in params.items() if v is not None})

    # --- the API's routes ---

    @overload
    def submit(self, request: Mapping[str, Any], *, dry_run: Literal[False] = False) -> Job: ...

    @overload
    def submit(self, request: Mapping[str, Any], *, dry_run: Literal[True]) -> DryRun: ...

    def submit(self, request: Mapping[str, Any], *, dry_run: bool = False) -> Job | DryRun:
        """POST /train: the stored job (queued, or the existing one for a repeated request).

        With `dry_run`, nothing is stored or enqueued: the answer says whether the cluster accepts the rendered
        object (`valid`, `cluster`) and what the admission would do (`admission`). A cluster's refusal (422 with a
        `cluster` verdict) is an answer here, not an `ApiRefused`."""
        if not dry_run:
            job: Job = self._request("POST", "/train", json=dict(request))
            return job
        try:
            response = self.session.post(f"{self.base_url}/train", params={"dry_run": "true"}, json=dict(request),
                                         timeout=max(self.timeout_s, DRY_RUN_TIMEOUT_S))
        except requests.RequestException as exc:
            raise ApiUnreachable(f"cannot reach the API at {self.base_url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code not in (200, 422) or not isinstance(body, dict) or "cluster" not in body:
            raise ApiRefused(response)
        answer: DryRun = body  # type: ignore[assignment]
        return answer

    def get(self, name: str) -> Job:
        job: Job = self._get(f"/train/{name}")
        return job

    def list(self, *, status: str | None = None, framework: str | None = None, run_id: str | None = None,
             namespace: str | None = None, limit: int | None = None, cursor: str | None = None) -> JobPage:
        page: JobPage = self._get("/train", status=status, framework=framework, run_id=run_id,
                                  namespace=namespace, limit=limit, cursor=cursor)
        return page

    def events(self, name: str) -> builtins.list[dict[str, Any]]:
        return builtins.list(self._get(f"/train/{name}/events")["events"])

    def cancel(self, name: str) -> Job:
        job: Job = self._request("POST", f"/train/{name}/cancel")
        return job

    def retry(self, name: str) -> Job:
        job: Job = self._request("POST", f"/train/{name}/retry")
        return job

    def queue(self, namespace: str | None = None) -> Queue:
        """GET /queue: the jobs waiting for admission in `namespace` (default: the API's), first in line first."""
        body: Queue = self._get("/queue", namespace=namespace)
        return body

    def metrics(self, name: str, max_points: int | None = None) -> dict[str, Any]:
        """`GET /train/NAME/metrics`: the run's series, at most `max_points` points."""
        body: dict[str, Any] = self._get(f"/train/{name}/metrics", max_points=max_points)
        return body

    def logs(self, name: str, tail: int | None = None) -> builtins.list[dict[str, str]]:
        """The trainer's log files, `{file, text}` each, the last `tail` lines of each."""
        return builtins.list(self._get(f"/train/{name}/logs", tail=tail)["logs"])

    def progress(self, name: str) -> dict[str, Any] | None:
        """The last reported progress (step, total_steps, loss, …), or None while there is none yet (404) or the
        run's storage does not answer (503)."""
        try:
            body = self._get(f"/train/{name}/progress")
        except ApiRefused as exc:
            if exc.status in (404, 503):
                return None
            raise
        return body.get("progress", body) if isinstance(body, dict) else None

    # --- built on them ---

    def look(self, name: str) -> tuple[Job, dict[str, Any] | None]:
        """The job, and its progress once it runs or has ended."""
        job = self.get(name)
        progress = self.progress(name) if job.get("status") == "running" or job.get("terminal") else None
        return job, progress

    def wait(self, name: str, *, interval_s: float = 2.0, timeout_s: float | None = None,
             on_update: OnUpdate | None = None) -> Job:
        """Poll until the API reports the job terminal; its final state. Raises WaitTimeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job, progress = self.look(name)
            if on_update is not None:
                on_update(job, progress)
            if job.get("terminal"):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(job, timeout_s or 0.0)
            time.sleep(interval_s)
