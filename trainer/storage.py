"""One small storage protocol over string URIs: `s3://bucket/key` (boto3) and local paths / `file://` URIs.

Everything the trainer writes or reads (checkpoints, manifests, logs, datasets, models) goes through `Storage`, so a
run behaves the same on S3, an S3-compatible store (`AWS_ENDPOINT_URL`) or a local folder. URIs name objects; a
"prefix" lists everything whose URI starts with it (for local storage: files under a folder, recursively).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


class ObjectNotFound(FileNotFoundError):
    """The URI names no object."""


class Storage(Protocol):
    """Object storage over string URIs. Writes are whole-object and atomic (readers never see half an object)."""

    def put_file(self, local_path: Path, uri: str) -> None: ...

    def put_bytes(self, data: bytes, uri: str) -> None: ...

    def get_bytes(self, uri: str) -> bytes:
        """Raises `ObjectNotFound`."""
        ...

    def get_file(self, uri: str, local_path: Path) -> None:
        """Download to `local_path` (parents created). Raises `ObjectNotFound`."""
        ...

    def exists(self, uri: str) -> bool: ...

    def size(self, uri: str) -> int | None:
        """Size in bytes, or None when there is no such object."""
        ...

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """URIs of the objects under `prefix` in lexicographic order, only those after `start_after` when given."""
        ...

    def delete(self, uri: str) -> None:
        """Delete one object; deleting a missing one is not an error."""
        ...

    def content_tag(self, uri: str) -> str:
        """A string that changes when the object's bytes change (S3: ETag and size; local: a hash of the bytes).
        Raises `ObjectNotFound`."""
        ...


def storage_for(uri: str) -> Storage:
    """The storage that serves `uri`: `S3Storage` for `s3://`, `LocalStorage` for paths and `file://`."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        return S3Storage()
    if scheme in ("", "file"):
        return LocalStorage()
    raise ValueError(f"unsupported storage URI {uri!r} (use s3://, file:// or a local path)")


class LocalStorage:
    """Local files. `file:///x` and `/x` name the same file; writes go to a temp file then `os.replace`."""

    @staticmethod
    def path(uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            return Path(parsed.path)
        if parsed.scheme:
            raise ValueError(f"not a local URI: {uri!r}")
        return Path(uri)

    def put_file(self, local_path: Path, uri: str) -> None:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, tmp, 1 << 20)
        os.replace(tmp.name, target)

    def put_bytes(self, data: bytes, uri: str) -> None:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)

    def get_bytes(self, uri: str) -> bytes:
        try:
            return self.path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(uri) from exc

    def get_file(self, uri: str, local_path: Path) -> None:
        source = self.path(uri)
        if not source.is_file():
            raise ObjectNotFound(uri)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, local_path)

    def exists(self, uri: str) -> bool:
        return self.path(uri).is_file()

    def size(self, uri: str) -> int | None:
        path = self.path(uri)
        return path.stat().st_size if path.is_file() else None

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        base = self.path(prefix)
        # A prefix may end mid-name ("checkpoints/step-"): only entries of its folder starting with it are walked,
        # so listing manifests never walks every checkpoint's files.
        if base.is_dir():
            tops = [base]
        elif base.parent.is_dir():
            tops = [p for p in base.parent.iterdir() if p.name.startswith(base.name)]
        else:
            tops = []
        keep_scheme = prefix.startswith("file://")
        found = []
        for top in tops:
            for path in [top] if top.is_file() else top.rglob("*"):
                if path.is_file() and not path.name.startswith("."):
                    found.append("file://" + str(path) if keep_scheme else str(path))
        for uri in sorted(found):
            if start_after is None or uri > start_after:
                yield uri

    def content_tag(self, uri: str) -> str:
        import xxhash

        digest = xxhash.xxh3_128()
        buffer = bytearray(1 << 20)  # one reused buffer: reading 8 MiB bytes objects held two at a time (+16 MB)
        view = memoryview(buffer)
        try:
            with self.path(uri).open("rb", buffering=0) as fh:
                while size := fh.readinto(buffer):
                    digest.update(view[:size])
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(uri) from exc
        return f"xxh3:{digest.hexdigest()}"

    def delete(self, uri: str) -> None:
        """Remove the file and the folders it leaves empty (an object store has no empty folders either)."""
        path = self.path(uri)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty (or not ours to remove): stop climbing
                break


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


class S3Storage:
    """S3 through boto3 with multipart, concurrent transfers.

    The endpoint comes from `endpoint_url`, else boto3's own environment handling (`AWS_ENDPOINT_URL`,
    `AWS_ENDPOINT_URL_S3`), so S3-compatible stores (MinIO, moto) work without code changes; credentials come from
    boto3's usual chain (env, profile, IAM role). The client is created lazily and shared (boto3 clients are
    thread-safe).
    """

    def __init__(self, endpoint_url: str | None = None, max_concurrency: int = 8,
                 multipart_chunk_mb: int = 16) -> None:
        self._endpoint_url = endpoint_url
        self._client: Any = None
        self._max_concurrency = max_concurrency
        self._chunk = multipart_chunk_mb * 1024 * 1024

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=32)
            self._client = boto3.session.Session().client("s3", endpoint_url=self._endpoint_url, config=config)
        return self._client

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self._chunk, multipart_chunksize=self._chunk,
                              max_concurrency=self._max_concurrency, use_threads=True)

    def put_file(self, local_path: Path, uri: str) -> None:
        bucket, key = split_s3(uri)
        self.client.upload_file(str(local_path), bucket, key, Config=self._transfer_config())

    def put_bytes(self, data: bytes, uri: str) -> None:
        bucket, key = split_s3(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except self.client.exceptions.NoSuchKey as exc:
            raise ObjectNotFound(uri) from exc
        return bytes(response["Body"].read())

    def get_file(self, uri: str, local_path: Path) -> None:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(bucket, key, str(local_path), Config=self._transfer_config())
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(uri) from exc
            raise

    def exists(self, uri: str) -> bool:
        return self.size(uri) is not None

    def size(self, uri: str) -> int | None:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            return int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        bucket, key_prefix = split_s3(prefix)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key_prefix}
        if start_after:
            kwargs["StartAfter"] = split_s3(start_after)[1]
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                yield f"s3://{bucket}/{item['Key']}"

    def delete(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        self.client.delete_object(Bucket=bucket, Key=key)

    def content_tag(self, uri: str) -> str:
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(uri) from exc
            raise
        return f"etag:{head['ETag'].strip(chr(34))}:{head['ContentLength']}"


def _is_not_found(exc: Any) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def read_json(storage: Storage, uri: str) -> Any:
    import json

    return json.loads(storage.get_bytes(uri))


def write_json(storage: Storage, uri: str, data: Any) -> None:
    import json

    storage.put_bytes((json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), uri)
