"""Storage over string URIs behaves the same on local paths, file:// URIs and S3 (moto's server over HTTP)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.s3 import S3Server
from trainer.storage import LocalStorage, ObjectNotFound, S3Storage, Storage, storage_for


@pytest.fixture(params=["local", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Storage, str]:
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        return S3Storage(), f"s3://{bucket}/root"
    base = str(tmp_path / "root")
    return LocalStorage(), ("file://" + base if request.param == "file" else base)


def test_put_get_exists_size_delete_round_trip(store: tuple[Storage, str], tmp_path: Path) -> None:
    storage, root = store
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(3000))
    storage.put_file(local, f"{root}/a/blob.bin")
    storage.put_bytes(b"hello", f"{root}/a/hello.txt")
    assert storage.get_bytes(f"{root}/a/hello.txt") == b"hello"
    assert storage.size(f"{root}/a/blob.bin") == 3000 and storage.exists(f"{root}/a/blob.bin")
    storage.get_file(f"{root}/a/blob.bin", tmp_path / "down" / "blob.bin")
    assert (tmp_path / "down" / "blob.bin").read_bytes() == local.read_bytes()
    storage.delete(f"{root}/a/hello.txt")
    storage.delete(f"{root}/a/hello.txt")  # deleting twice is fine
    assert not storage.exists(f"{root}/a/hello.txt") and storage.size(f"{root}/a/hello.txt") is None
    with pytest.raises(ObjectNotFound):
        storage.get_bytes(f"{root}/a/hello.txt")
    with pytest.raises(ObjectNotFound):
        storage.get_file(f"{root}/missing", tmp_path / "x")


def test_list_is_sorted_by_prefix_and_honours_start_after(store: tuple[Storage, str]) -> None:
    storage, root = store
    for name in ("ck/step-000020.json", "ck/step-000010.json", "ck/checkpoint-10/model.bin", "ck/latest.json"):
        storage.put_bytes(b"x", f"{root}/{name}")
    assert list(storage.list(f"{root}/ck/step-")) == [f"{root}/ck/step-000010.json", f"{root}/ck/step-000020.json"]
    assert list(storage.list(f"{root}/ck/step-", start_after=f"{root}/ck/step-000010.json")) == [
        f"{root}/ck/step-000020.json"]
    assert len(list(storage.list(f"{root}/ck/"))) == 4
    assert list(storage.list(f"{root}/nothing/")) == []


def test_storage_for_picks_by_scheme() -> None:
    assert isinstance(storage_for("s3://b/k"), S3Storage)
    assert isinstance(storage_for("/tmp/x"), LocalStorage)
    assert isinstance(storage_for("file:///tmp/x"), LocalStorage)
    with pytest.raises(ValueError, match="unsupported"):
        storage_for("gs://b/k")


@pytest.mark.slow
def test_s3_multipart_upload_and_download_of_a_large_file(s3_server: S3Server, s3_bucket: str,
                                                          tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    storage = S3Storage(endpoint_url=s3_server.endpoint_url, multipart_chunk_mb=5)
    storage.put_file(big, f"s3://{s3_bucket}/big.bin")
    head = s3_server.client().head_object(Bucket=s3_bucket, Key="big.bin")
    assert head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-4")  # 4 parts of 5 MiB: it really was a multipart upload
    storage.get_file(f"s3://{s3_bucket}/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage()
    storage.put_bytes(b"one", str(tmp_path / "x.json"))
    storage.put_bytes(b"two", str(tmp_path / "x.json"))
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert (tmp_path / "x.json").read_bytes() == b"two"
