"""A real S3 endpoint: moto's server over HTTP on a free port (in this process's threads), plus helpers to make
buckets and to hand the endpoint and dummy credentials to subprocesses (boto3 reads `AWS_ENDPOINT_URL` itself).
`s3_client` and `answers` also serve an endpoint started another way (the demo's `moto_server` process)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from devstack.procs import free_port, wait_for

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def s3_client(endpoint_url: str, credentials: dict[str, str] = DUMMY_CREDENTIALS) -> Any:
    """A boto3 S3 client of `endpoint_url` with `credentials` (keys named as in the environment)."""
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=credentials["AWS_DEFAULT_REGION"],
                        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])


def answers(client: Any) -> bool:
    """True once the endpoint answers a ListBuckets (connection refused until the server listens)."""
    try:
        client.list_buckets()
        return True
    except Exception:  # noqa: BLE001 - botocore raises several kinds while the server starts
        return False


class S3Server:
    """One moto server. `env()` is what a process needs to talk to it; `new_bucket()` makes a fresh bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> S3Server:
        self._server.start()
        wait_for(lambda: answers(self.client()), 10, f"the S3 endpoint {self.endpoint_url}", interval=0.05)
        return self

    def stop(self) -> None:
        self._server.stop()

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint_url, **DUMMY_CREDENTIALS}

    def client(self) -> Any:
        return s3_client(self.endpoint_url)

    def new_bucket(self, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [o["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
