"""The trainer scenarios' instruments, without a trainer: the S3 proxy in front of moto's server forwards objects
unchanged, answers faults that boto3 retries to success, kills from inside an upload, and the storage scenario's
checks see a manifest stored before its files and a refused upload never retried. (The scenarios themselves run
real trainers for minutes: `python -m reliability --quick --only trainer_killed storage_faults`.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from devstack.s3 import DUMMY_CREDENTIALS, S3Server
from reliability.s3_proxy import Faults, Request, S3Proxy
from reliability.scenarios.storage_faults import early_manifests, unretried
from reliability.trainer_runs import TrainerLab


@pytest.fixture
def moto() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


def client_via(proxy: S3Proxy, attempts: int = 8) -> object:
    return boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1",
                        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": attempts, "mode": "standard"}))


def test_the_proxy_forwards_faults_and_boto3_retries_them_to_success(moto: S3Server) -> None:
    bucket = moto.new_bucket()
    proxy = S3Proxy(moto.endpoint_url, Faults(error_rate=0.5, seed=1)).start()
    try:
        s3 = client_via(proxy)
        for i in range(10):
            s3.put_object(Bucket=bucket, Key=f"k/{i}", Body=b"x" * (100 + i))  # type: ignore[attr-defined]
        assert s3.head_object(Bucket=bucket, Key="k/3")["ContentLength"] == 103  # type: ignore[attr-defined]
        assert s3.get_object(Bucket=bucket, Key="k/9")["Body"].read() == b"x" * 109  # type: ignore[attr-defined]
        log = proxy.requests()
    finally:
        proxy.stop()
    refused = [r for r in log if r.injected]
    assert refused and {r.status for r in refused} <= {500, 503}
    assert unretried(log) == []
    assert sorted(moto.keys(bucket)) == sorted(f"k/{i}" for i in range(10))  # every upload landed once retried


def test_an_upload_hook_can_drop_the_request_and_a_drop_is_never_stored(moto: S3Server) -> None:
    bucket = moto.new_bucket()
    proxy = S3Proxy(moto.endpoint_url).start()
    proxy.on_upload = lambda key: not key.endswith("/dropped")
    try:
        s3 = client_via(proxy, attempts=1)
        s3.put_object(Bucket=bucket, Key="kept", Body=b"1")  # type: ignore[attr-defined]
        with pytest.raises(Exception):  # noqa: B017 - the connection is closed without an answer
            s3.put_object(Bucket=bucket, Key="dropped", Body=b"2")  # type: ignore[attr-defined]
        log = proxy.requests()
    finally:
        proxy.stop()
    assert moto.keys(bucket) == ["kept"]
    assert set(unretried(log)) == {f"the upload of {bucket}/dropped answered 0 was never retried to success"}


def test_the_manifest_check_sees_a_manifest_stored_before_its_file(moto: S3Server, tmp_path: Path) -> None:
    lab = TrainerLab.__new__(TrainerLab)  # only its S3 reads: no model, no trainer
    lab.s3, lab.bucket, lab.client = moto, moto.new_bucket(), moto.client()
    root = f"{lab.prefix('r')}/checkpoints"
    manifest = {"step": 5, "name": "dcp-000005", "files": [{"path": "dcp-000005/a", "size": 1}]}
    lab.client.put_object(Bucket=lab.bucket, Key=f"{root}/step-000005.json", Body=json.dumps(manifest).encode())
    key = f"{lab.bucket}/{root}"
    in_order = [Request(1.0, "PUT", f"{key}/dcp-000005/a", "", 200, sent=0.5),
                Request(2.0, "PUT", f"{key}/step-000005.json", "", 200, sent=1.5)]
    early = [Request(2.0, "PUT", f"{key}/dcp-000005/a", "", 200, sent=0.5),
             Request(1.8, "PUT", f"{key}/step-000005.json", "", 200, sent=1.5)]
    found = early_manifests(lab, "r", in_order)
    assert not any("was sent before" in p for p in found)
    assert "manifest step-000005.json was sent before dcp-000005/a was stored" in early_manifests(lab, "r", early)
