"""The client side of a scenario: POST /train bodies over real HTTP, as a platform team's client does.

`post_all` sends every body from a few threads (full rate, or paced at `rate_per_s`); a client that got no answer
or a 5xx sends the same body again (the API answers a repeat with the stored job), up to `retries` times. The API's
answers are recorded, not trusted: the invariants are read from Redis and the emulator afterwards.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from reliability.stack import TOKEN

HEADERS = {"X-TRAINER-TOKEN": TOKEN, "Content-Type": "application/json"}


def job_body(tag: str, i: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "framework": "meta", "model_id": "tiny-gpt2", "run_id": f"{tag}-{i:05d}", "num_nodes": 1, "gpus_per_node": 1,
        "cpus_per_node": 2, "memory_per_node_gb": 4, "image": "registry.example/trainer:1.0",
        "checkpoint_base_uri": "s3://reliability/runs", "dataset_uri": "s3://reliability/data/train.jsonl",
        "namespace": "rel",
    }
    body.update(overrides)
    return body


@dataclasses.dataclass
class LoadResult:
    accepted: dict[str, str] = dataclasses.field(default_factory=dict)  # run_id -> job name (2xx)
    answers: Counter[str] = dataclasses.field(default_factory=Counter)  # "202", "200", "503", "no answer", …
    repeats: int = 0  # bodies sent more than once
    refused: list[str] = dataclasses.field(default_factory=list)  # run ids never accepted
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def post_one(url: str, body: dict[str, Any], result: LoadResult, retries: int, backoff_s: float = 0.2) -> None:
    for attempt in range(retries + 1):
        if attempt:
            with result.lock:
                result.repeats += 1
            time.sleep(backoff_s)
        try:
            answer = requests.post(f"{url}/train", json=body, headers=HEADERS, timeout=15)
        except requests.RequestException:
            with result.lock:
                result.answers["no answer"] += 1
            continue
        with result.lock:
            result.answers[str(answer.status_code)] += 1
        if answer.status_code in (200, 202):
            with result.lock:
                result.accepted[body["run_id"]] = answer.json()["name"]
            return
        if answer.status_code < 500:
            break
        backoff_s = max(backoff_s, float(answer.headers.get("Retry-After") or 0))
    with result.lock:
        result.refused.append(body["run_id"])


def post_all(url: str, bodies: list[dict[str, Any]], *, threads: int = 8, rate_per_s: float | None = None,
             retries: int = 20, result: LoadResult | None = None) -> LoadResult:
    result = result or LoadResult()
    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for i, body in enumerate(bodies):
            if rate_per_s:
                delay = start + i / rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            pool.submit(post_one, url, body, result, retries)
    return result
