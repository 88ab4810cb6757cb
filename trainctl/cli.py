"""`trainctl`: the Training Broker API from a terminal, on the SDK (`trainctl.client`).

    trainctl submit FILE          POST /train (FILE is a TrainingJobRequest as JSON, `-` for stdin)
    trainctl status NAME          GET /train/NAME
    trainctl list                 GET /train (--status, --framework, --run-id, --namespace, --limit)
    trainctl events NAME          GET /train/NAME/events
    trainctl logs NAME            GET /train/NAME/logs (--tail)
    trainctl metrics NAME         GET /train/NAME/metrics: sparklines and a table (--points, --json)
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
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from trainctl.client import ApiUnreachable, Client, TrainerError, WaitTimeout
from trainctl.display import display_for
from trainctl.metrics import render as render_metrics
from trainctl.sched import show_dry_run, show_queue

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class UsageError(Exception):
    """A bad argument or request file."""


def wait_for_job(client: Client, name: str, interval_s: float, timeout_s: float | None, out: TextIO) -> int:
    """Wait showing progress; 0 when the job succeeded, 1 when it failed, was cancelled or the wait timed out."""
    display = display_for(name, out)
    try:
        job = client.wait(name, interval_s=interval_s, timeout_s=timeout_s, on_update=display)
    except WaitTimeout as exc:
        display.write(f"{exc}; giving up")
        return 1
    finally:
        display.close()
    ok = job["status"] == "succeeded"
    verdict = "succeeded" if ok else f"did not succeed: {job['status']}"
    print(f"{name}: framework {job.get('framework')} {verdict} (attempt {job.get('attempt')})", file=out, flush=True)
    return 0 if ok else 1


# --- output ----------------------------------------------------------------------------------------------------


def job_line(job: Any) -> str:
    text = f"{job['name']}  {job['status']}  framework={job.get('framework')}  attempt={job.get('attempt')}"
    return f"{text}  {job['detail']}" if job.get("detail") else text


def print_job(job: Any, out: TextIO) -> None:
    width = max(len(k) for k in job)
    for key, value in job.items():
        print(f"{key:<{width}}  {'' if value is None else value}", file=out)


# --- commands --------------------------------------------------------------------------------------------------


def _read_request(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc


def cmd_submit(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.dry_run:
        return show_dry_run(client, _read_request(args.file), args.json, out)
    job = client.submit(_read_request(args.file))
    print(job_line(job), file=out)
    return wait_for_job(client, job["name"], args.interval, args.timeout, out) if args.wait else 0


def cmd_status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    job = client.get(args.name)
    if args.json:
        print(json.dumps(job, indent=2), file=out)
    else:
        print_job(job, out)
    return 0


def cmd_list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    page = client.list(status=args.status, framework=args.framework, run_id=args.run_id,
                      namespace=args.namespace, limit=args.limit, cursor=args.cursor)
    for job in page["jobs"]:
        print(job_line(job), file=out)
    if page.get("next_cursor"):
        print(f"(more: --cursor {page['next_cursor']})", file=out)
    return 0


def cmd_events(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    for event in client.events(args.name):
        print(f"{event['at']}  {event.get('from') or '-'} -> {event['to']}  {event.get('reason', '')}", file=out)
    return 0


def cmd_logs(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    logs = client.logs(args.name, tail=args.tail)
    for entry in logs:
        if len(logs) > 1:
            print(f"==> {entry['file']} <==", file=out)
        print(entry["text"], end="" if entry["text"].endswith("\n") else "\n", file=out)
    return 0


def cmd_metrics(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    body = client.metrics(args.name, max_points=args.points)
    if args.json:
        print(json.dumps(body, indent=2), file=out)
    else:
        render_metrics(body, out)
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    print(job_line(client.cancel(args.name)), file=out)
    return 0


def cmd_retry(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    print(job_line(client.retry(args.name)), file=out)
    return 0


def cmd_wait(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return wait_for_job(client, args.name, args.interval, args.timeout, out)


def cmd_queue(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return show_queue(client, args.namespace, args.json, out)


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
    metrics = command("metrics", cmd_metrics, "the run's loss, eval loss, lr and tokens/s by step")
    metrics.add_argument("--points", type=int, default=20, help="at most this many points (default 20)")
    metrics.add_argument("--json", action="store_true")
    command("cancel", cmd_cancel, "cancel a job")
    command("retry", cmd_retry, "retry a failed or cancelled job from its latest checkpoint")
    waiting(command("wait", cmd_wait, "wait for a job to end, showing its progress"))
    queue = command("queue", cmd_queue, "the jobs waiting for quota, first in line first", named=False)
    queue.add_argument("--namespace")
    queue.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(Client.from_env(base_url=args.url, token=args.token), args, out or sys.stdout)
    except UsageError as exc:
        print(f"trainctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiUnreachable as exc:
        print(f"trainctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TrainerError as exc:
        print(f"trainctl: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
