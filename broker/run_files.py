"""Read a run's small files (progress, logs) from its storage: a local path, `file://`, or `s3://`.

The services must not import the trainer (it ships alone in its image), so this is their own tiny read-only reader:
the API reads progress and logs through it, the broker's recovery the trainer's `logs/failure.json`.
S3 goes through boto3, which takes the endpoint of S3-compatible stores from `AWS_ENDPOINT_URL` itself. A missing
object raises `FileNotFoundError`; a store that cannot answer (unreachable, timeouts, denied) `StorageUnavailable`.
Short timeouts and few retries keep a dead store from holding an API worker.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

#: Bytes read from the end of a log for a tail: enough for thousands of lines, bounded whatever the file's size.
TAIL_BYTES = 1024 * 1024


class StorageUnavailable(Exception):
    """The run's storage did not answer."""


def local_path(uri: str) -> Path | None:
    """The local path a URI names, or None for a remote (S3) URI."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri) if uri.startswith("/") else None


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not a storage URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


@functools.cache
def _s3() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.session.Session().client("s3", config=config)


def _s3_errors(exc: Exception, uri: str) -> Exception:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            return FileNotFoundError(uri)
    return StorageUnavailable(f"storage did not answer for {uri}: {exc}")


def read_bytes(uri: str, tail_bytes: int | None = None) -> bytes:
    """The object's bytes (only its last `tail_bytes` when given)."""
    path = local_path(uri)
    if path is not None:
        return _read_local(path, tail_bytes)
    bucket, key = _split_s3(uri)
    extra = {"Range": f"bytes=-{tail_bytes}"} if tail_bytes else {}
    try:
        body: bytes = _s3().get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    except Exception as exc:  # botocore's errors have no common base worth naming; translated once here
        raise _s3_errors(exc, uri) from exc
    return body


def _read_local(path: Path, tail_bytes: int | None) -> bytes:
    try:
        with path.open("rb") as f:
            if tail_bytes:
                size = f.seek(0, 2)
                f.seek(max(0, size - tail_bytes))
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise FileNotFoundError(str(path)) from exc
    except OSError as exc:
        raise StorageUnavailable(f"cannot read {path}: {exc.strerror}") from exc


def list_files(prefix_uri: str) -> list[str]:
    """URIs of the files directly under `prefix_uri` (not recursive), sorted."""
    path = local_path(prefix_uri)
    if path is not None:
        try:
            return sorted(str(p) for p in path.iterdir() if p.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StorageUnavailable(f"cannot list {path}: {exc.strerror}") from exc
    bucket, key = _split_s3(prefix_uri.rstrip("/") + "/")
    try:
        pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/")
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    except Exception as exc:
        error = _s3_errors(exc, prefix_uri)
        if isinstance(error, FileNotFoundError):
            return []
        raise error from exc
    return sorted(f"s3://{bucket}/{k}" for k in keys)


def tail_lines(data: bytes, lines: int) -> str:
    """The last `lines` lines of `data` as text (undecodable bytes replaced)."""
    text = data.decode("utf-8", errors="replace")
    kept = text.splitlines(keepends=True)[-lines:] if lines else []
    return "".join(kept)
