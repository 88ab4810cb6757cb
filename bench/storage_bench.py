"""Checkpoint storage against moto's S3 server: a 1 GB upload and the latest-checkpoint lookup.

Upload: the trainer's `S3Storage.put_file` (multipart, `TRAINER_S3_*` chunk and concurrency defaults) against
boto3's `upload_file` with its default `TransferConfig`, the same file to the same server, alternating, best of
the repeats. Target ≥ 1.0 (the trainer's upload is not slower than boto3's default).

Lookup: `CheckpointManager.latest()` with N complete checkpoints in the prefix (one manifest and one file each, the
pointer naming the newest), counting the S3 requests it sends, against listing the whole prefix (what finding the
newest manifest would cost without the pointer). Target: the lookup's requests do not grow with N (the same at N as
at a small count).

moto's server runs in its own process (`moto_server`), so the client's threads do not share its interpreter.
Run: `.venv/bin/python -m bench.storage_bench [--upload-mb 1024] [--checkpoints 10000]`, or through `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from bench.core import Figure, table
from devstack import free_port
from devstack.s3 import DUMMY_CREDENTIALS
from trainer.checkpoints import POINTER, CheckpointManager, manifest_name
from trainer.storage import S3Storage


@contextmanager
def moto_server() -> Iterator[str]:
    """`moto_server` in a child process on a free loopback port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _client(endpoint).list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(20)


def _client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])


def _random_file(path: Path, mb: int) -> None:
    with path.open("wb") as out:
        for _ in range(mb):
            out.write(os.urandom(1024 * 1024))


def upload_figures(endpoint: str, mb: int, repeats: int) -> list[Figure]:
    os.environ.update(DUMMY_CREDENTIALS)
    client = _client(endpoint)
    client.create_bucket(Bucket="upload")
    storage = S3Storage(endpoint_url=endpoint)
    with tempfile.TemporaryDirectory(prefix="tb-bench-s3-") as tmp:
        src = Path(tmp) / "checkpoint.bin"
        _random_file(src, mb)
        ours, default = [], []
        for i in range(repeats):
            t0 = time.perf_counter()
            storage.put_file(src, f"s3://upload/ours-{i}.bin")
            ours.append(time.perf_counter() - t0)
            client.delete_object(Bucket="upload", Key=f"ours-{i}.bin")  # moto holds objects in memory
            t0 = time.perf_counter()
            client.upload_file(str(src), "upload", f"default-{i}.bin")
            default.append(time.perf_counter() - t0)
            client.delete_object(Bucket="upload", Key=f"default-{i}.bin")
    best, base = mb / min(ours), mb / min(default)
    return [Figure(f"checkpoint upload {mb} MB to moto S3 (S3Storage.put_file)", best, "MB/s", base, None, ">= 1.0",
                   note=f"baseline: boto3 upload_file, default TransferConfig; best of {repeats}")]


class _Counter:
    def __init__(self) -> None:
        self.requests = 0

    def __call__(self, **_: Any) -> None:
        self.requests += 1


def _populate(endpoint: str, bucket: str, count: int) -> None:
    """`count` complete checkpoints (a 16-byte file and its manifest each) and the pointer to the newest."""
    client = _client(endpoint)
    client.create_bucket(Bucket=bucket)

    def one(step: int) -> None:
        name = f"ckpt-{step}/model.pt"
        client.put_object(Bucket=bucket, Key=f"run/checkpoints/{name}", Body=b"0123456789abcdef")
        manifest = {"step": step, "name": name, "files": [{"path": name, "size": 16}],
                    "created": "2026-12-02T00:00:00+00:00", "metadata": {}}
        client.put_object(Bucket=bucket, Key=f"run/checkpoints/{manifest_name(step)}", Body=json.dumps(manifest))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(1, count + 1)))
    client.put_object(Bucket=bucket, Key=f"run/checkpoints/{POINTER}",
                      Body=json.dumps({"step": count, "manifest": manifest_name(count)}))


def _lookup(endpoint: str, bucket: str, expect: int) -> tuple[int, float, int, float]:
    """(requests, seconds) of `latest()`, then of listing the whole prefix."""
    storage = S3Storage(endpoint_url=endpoint)
    counter = _Counter()
    storage.client.meta.events.register("before-send.s3", counter)
    manager = CheckpointManager(storage, f"s3://{bucket}/run/checkpoints")
    t0 = time.perf_counter()
    found = manager.latest()
    lookup_s = time.perf_counter() - t0
    assert found is not None and found.step == expect, found
    lookup = counter.requests
    counter.requests = 0
    t0 = time.perf_counter()
    listed = sum(1 for _ in storage.list(f"s3://{bucket}/run/checkpoints/"))
    list_s = time.perf_counter() - t0
    assert listed == 2 * expect + 1, listed
    return lookup, lookup_s, counter.requests, list_s


def lookup_figures(endpoint: str, counts: list[int]) -> list[Figure]:
    os.environ.update(DUMMY_CREDENTIALS)
    out: list[Figure] = []
    first: int | None = None
    for count in counts:
        bucket = f"lookup-{count}"
        _populate(endpoint, bucket, count)
        requests, seconds, list_requests, list_seconds = _lookup(endpoint, bucket, count)
        first = requests if first is None else first
        out.append(Figure(f"latest checkpoint of {count:,}: S3 requests", requests, "requests", list_requests, None,
                          f"<= {first}", target_on="value",
                          note=f"baseline: listing the whole prefix; target: as many as at {counts[0]:,}"))
        out.append(Figure(f"latest checkpoint of {count:,}: seconds", seconds, "s", list_seconds, None,
                          note="baseline: listing the whole prefix"))
    return out


def figures(upload_mb: int, repeats: int, counts: list[int]) -> list[Figure]:
    with moto_server() as endpoint:
        return upload_figures(endpoint, upload_mb, repeats) + lookup_figures(endpoint, counts)


def run(quick: bool) -> list[Figure]:
    if quick:
        return figures(64, 2, [10, 1000])
    return figures(1024, 3, [10, 10_000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-mb", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[10, 10_000])
    args = parser.parse_args()
    print(table(figures(args.upload_mb, args.repeats, args.checkpoints)))


if __name__ == "__main__":
    main()
