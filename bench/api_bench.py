"""API throughput under gunicorn: `POST /train` and `GET /train/<name>` against a bare Flask JSON endpoint.

Both apps run under the same gunicorn settings, the image's (`--workers 2 --threads 4`, access log on), on
loopback; the load comes from separate processes (4, each sequential, a new connection per request). `POST /train`
sends the product's sample request with a unique `run_id` each time, with the token: validation, the Redis write
(one Lua script) and the Celery message (no worker consumes it here). Targets: POST ≥ 0.5 and GET ≥ 0.7 of the bare
endpoint's requests per second, measured in the same run.

Run: `.venv/bin/python -m bench.api_bench [--seconds 10]`, or through `make bench`.
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


def figures(seconds: float, processes: int = 4) -> list[Figure]:
    server = RedisServer().start()
    try:
        env = {"REDIS_URL": server.url(0), "TRAINER_API_TOKEN": TOKEN, "TRAINER_CLUSTER_BACKEND": "local"}
        auth = {"X-TRAINER-TOKEN": TOKEN}
        with gunicorn("bench._bare_app:create_app()", {}, "/echo") as bare:
            bare_post, _ = requests_per_second(bare, "POST", "/echo", body=BODY, seconds=seconds,
                                               processes=processes)
            bare_get, _ = requests_per_second(bare, "GET", "/echo", seconds=seconds, processes=processes)
        with gunicorn("api.app:create_app()", env, "/healthz") as api:
            name = _post_one(api, {**BODY, "run_id": "bench_get_target"})
            post, post_err = requests_per_second(api, "POST", "/train", body=BODY, headers=auth, seconds=seconds,
                                                 processes=processes)
            get, get_err = requests_per_second(api, "GET", f"/train/{name}", headers=auth, seconds=seconds,
                                               processes=processes)
    finally:
        server.stop()
    return [
        Figure("POST /train req/s (gunicorn -w 2 --threads 4)", post, "req/s", bare_post, None, ">= 0.5",
               note=f"baseline: bare Flask JSON POST; {post_err} errors"),
        Figure("GET /train/<name> req/s (gunicorn -w 2 --threads 4)", get, "req/s", bare_get, None, ">= 0.7",
               note=f"baseline: bare Flask JSON GET; {get_err} errors"),
    ]


def run(quick: bool) -> list[Figure]:
    return figures(4.0 if quick else 15.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    print(table(figures(args.seconds, args.processes)))


if __name__ == "__main__":
    main()
