"""`trainctl`: the Training Broker API from a terminal. A plain HTTP client: it never touches Redis or the cluster.

    trainctl submit FILE          POST /train (FILE is a TrainingJobRequest as JSON, `-` for stdin)
    trainctl status NAME          GET /train/NAME
    trainctl list                 GET /train (--status, --framework, --run-id, --namespace, --limit)
    trainctl events NAME          GET /train/NAME/events
    trainctl logs NAME            GET /train/NAME/logs (--tail)
    trainctl cancel NAME          POST /train/NAME/cancel
    trainctl retry NAME           POST /train/NAME/retry
    trainctl wait NAME            polls status and /progress until the job ends (a progress bar in a terminal)
    trainctl queue                GET /queue (--namespace): the jobs waiting for quota, first in line first
    trainctl submit FILE --dry-run   POST /train?dry_run=true: what the cluster and the admission would say

The API is at `TRAINER_BASE_URL` (default http://127.0.0.1:8080), the token in `TRAINER_API_TOKEN`; `--url` and
`--token` override them. Exit codes: 0 success; 1 the API refused (its message and fields are printed) or the waited
job did not succeed; 2 usage errors; 3 the API is unreachable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import requests

from api.cli_sched import cmd_queue, dry_run
from api.cli_wait import wait_for_job

DEFAULT_URL = "http://127.0.0.1:8080"
TOKEN_HEADER = "X-TRAINER-TOKEN"
EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class CliSettings:
    base_url: str = DEFAULT_URL
    """TRAINER_BASE_URL: where the API listens."""
    token: str = ""
    """TRAINER_API_TOKEN: sent as X-TRAINER-TOKEN (the first one when the variable lists several)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CliSettings:
        env = os.environ if environ is None else environ
        token = (env.get("TRAINER_API_TOKEN") or "").split(",")[0].strip()
        return cls(base_url=env.get("TRAINER_BASE_URL") or DEFAULT_URL, token=token)


class CliError(Exception):
    """A one-line message for the user and the exit code that goes with it."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_error(response: requests.Response) -> str:
    """`<status> <code>: <message> (field: problem; …)` from the API's error body, whatever its shape."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict) or not error:
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


class Client:
    """The API over HTTP. Every method returns the decoded JSON body or raises CliError."""

    def __init__(self, settings: CliSettings, timeout_s: float = 10.0) -> None:
        self.base_url = settings.base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        if settings.token:
            self.session.headers[TOKEN_HEADER] = settings.token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise CliError(f"cannot reach the API at {self.base_url}: {exc}", EXIT_UNREACHABLE) from exc
        if response.status_code >= 400:
            raise CliError(describe_error(response))
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"the API at {self.base_url} answered something that is not JSON") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)


# --- output ----------------------------------------------------------------------------------------------------


def job_line(job: dict[str, Any]) -> str:
    text = f"{job['name']}  {job['status']}  framework={job.get('framework')}  attempt={job.get('attempt')}"
    return f"{text}  {job['detail']}" if job.get("detail") else text


def print_job(job: dict[str, Any], out: TextIO) -> None:
    width = max(len(k) for k in job)
    for key, value in job.items():
        print(f"{key:<{width}}  {'' if value is None else value}", file=out)


# --- commands --------------------------------------------------------------------------------------------------


def _read_request(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}", EXIT_USAGE) from exc


def cmd_submit(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.dry_run:
        return dry_run(client, _read_request(args.file), args.json, out)
    job = client.post("/train", _read_request(args.file))
    print(job_line(job), file=out)
    return wait_for_job(client, job["name"], args.interval, args.timeout, out) if args.wait else 0


def cmd_status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    job = client.get(f"/train/{args.name}")
    if args.json:
        print(json.dumps(job, indent=2), file=out)
    else:
        print_job(job, out)
    return 0


def cmd_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    page = client.get("/train", status=args.status, framework=args.framework, run_id=args.run_id,
                      namespace=args.namespace, limit=args.limit, cursor=args.cursor)
    for job in page["jobs"]:
        print(job_line(job), file=out)
    if page.get("next_cursor"):
        print(f"(more: --cursor {page['next_cursor']})", file=out)
    return 0


def cmd_events(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    for event in client.get(f"/train/{args.name}/events")["events"]:
        print(f"{event['at']}  {event.get('from') or '-'} -> {event['to']}  {event.get('reason', '')}", file=out)
    return 0


def cmd_logs(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    body = client.get(f"/train/{args.name}/logs", tail=args.tail)
    for entry in body["logs"]:
        if len(body["logs"]) > 1:
            print(f"==> {entry['file']} <==", file=out)
        print(entry["text"], end="" if entry["text"].endswith("\n") else "\n", file=out)
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    print(job_line(client.post(f"/train/{args.name}/cancel")), file=out)
    return 0


def cmd_retry(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    print(job_line(client.post(f"/train/{args.name}/retry")), file=out)
    return 0


def cmd_wait(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return wait_for_job(client, args.name, args.interval, args.timeout, out)


Command = Callable[[Client, argparse.Namespace, TextIO], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainctl", description="Talk to the Training Broker API.")
    parser.add_argument("--url", help="API base URL (default: $TRAINER_BASE_URL or http://127.0.0.1:8080)")
    parser.add_argument("--token", help="API token (default: $TRAINER_API_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Command, help_text: str, named: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if named:
            p.add_argument("name", help="the job's name")
        p.set_defaults(func=func)
        return p

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
        p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")

    submit = command("submit", cmd_submit, "submit a TrainingJobRequest (JSON file, - for stdin)", named=False)
    submit.add_argument("file")
    submit.add_argument("--wait", action="store_true", help="then wait for the job to end")
    submit.add_argument("--dry-run", action="store_true", help="check it with the cluster; store nothing")
    submit.add_argument("--json", action="store_true", help="with --dry-run: print the whole answer")
    waiting(submit)
    command("status", cmd_status, "show a job").add_argument("--json", action="store_true")
    listing = command("list", cmd_list, "list jobs, newest first", named=False)
    for flag in ("--status", "--framework", "--run-id", "--namespace", "--cursor"):
        listing.add_argument(flag)
    listing.add_argument("--limit", type=int)
    command("events", cmd_events, "a job's status history")
    command("logs", cmd_logs, "the trainer's log").add_argument("--tail", type=int, help="last N lines per file")
    command("cancel", cmd_cancel, "cancel a job")
    command("retry", cmd_retry, "retry a failed or cancelled job from its latest checkpoint")
    waiting(command("wait", cmd_wait, "wait for a job to end, showing its progress"))
    queue = command("queue", cmd_queue, "the jobs waiting for quota, first in line first", named=False)
    queue.add_argument("--namespace")
    queue.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = CliSettings.from_env()
    settings = CliSettings(base_url=args.url or settings.base_url, token=args.token or settings.token)
    func: Command = args.func
    try:
        return func(Client(settings), args, out or sys.stdout)
    except CliError as exc:
        print(f"trainctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
