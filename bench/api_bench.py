"""API throughput under gunicorn: `POST /train` and `GET /train/<name>` against a bare Flask JSON endpoint.

Both apps run under the same gunicorn settings, the image's (`--workers 2 --threads 4`, access log on), on
loopback; the load comes from separate processes (4, each sequential, a new connection per request). `POST /train`
sends the product's sample request with a unique `run_id` each time, with the token: validation, the Redis write
(one Lua script, which also pushes the Celery message; no worker consumes it here). Both servers run side by side
and the load alternates between them in rounds, so the ratio compares the same moments of a shared machine.
Targets: POST ≥ 0.5 and GET ≥ 0.7 of the bare endpoint's requests per second, measured in the same run.

Run: `.venv/bin/python -m bench.api_bench [--seconds 10] [--rounds 3]`, or through `make bench`.
"""

from __future__ import annotations

import argparse
import http.client
import json

from bench._services import gunicorn, requests_per_second
from bench.core import Figure, table
from bench.memory_bench import SAMPLE
from devstack import RedisServer

TOKEN = "bench-token"
BODY = {**SAMPLE, "run_id": "bench_api"}


def _post_one(port: int, body: dict[str, object]) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/train", body=json.dumps(body),
                 headers={"X-TRAINER-TOKEN": TOKEN, "Content-Type": "application/json"})
    reply = conn.getresponse()
    data = json.loads(reply.read())
    assert reply.status == 202, data
    return str(data["name"])


def figures(seconds: float, processes: int = 4, rounds: int = 3) -> list[Figure]:
    """Both servers run side by side; each round loads the bare endpoint, then the API, for `seconds / rounds`
    each (POST, then GET), so a change in the machine's other load falls on both sides of a ratio alike."""
    server = RedisServer().start()
    slot = seconds / rounds
    got = {key: [0.0, 0] for key in ("bare_post", "post", "bare_get", "get")}

    def load(key: str, port: int, method: str, path: str, body: dict[str, object] | None = None,
             headers: dict[str, str] | None = None) -> None:
        rate, errors = requests_per_second(port, method, path, body=body, headers=headers, seconds=slot,
                                           processes=processes)
        got[key][0] += rate / rounds
        got[key][1] += errors

    try:
        env = {"REDIS_URL": server.url(0), "TRAINER_API_TOKEN": TOKEN, "TRAINER_CLUSTER_BACKEND": "local"}
        auth = {"X-TRAINER-TOKEN": TOKEN}
        with gunicorn("bench._bare_app:create_app()", {}, "/echo") as bare, \
                gunicorn("api.app:create_app()", env, "/healthz") as api:
            name = _post_one(api, {**BODY, "run_id": "bench_get_target"})
            for _ in range(rounds):
                load("bare_post", bare, "POST", "/echo", body=BODY)
                load("post", api, "POST", "/train", body=BODY, headers=auth)
                load("bare_get", bare, "GET", "/echo")
                load("get", api, "GET", f"/train/{name}", headers=auth)
    finally:
        server.stop()
    note = f"; {rounds} alternating rounds; {{}} errors"
    return [
        Figure("POST /train req/s (gunicorn -w 2 --threads 4)", got["post"][0], "req/s", got["bare_post"][0], None,
               ">= 0.5", note="baseline: bare Flask JSON POST" + note.format(got["post"][1])),
        Figure("GET /train/<name> req/s (gunicorn -w 2 --threads 4)", got["get"][0], "req/s", got["bare_get"][0],
               None, ">= 0.7", note="baseline: bare Flask JSON GET" + note.format(got["get"][1])),
    ]


def run(quick: bool) -> list[Figure]:
    return figures(4.0 if quick else 15.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(figures(args.seconds, args.processes, args.rounds)))


if __name__ == "__main__":
    main()
