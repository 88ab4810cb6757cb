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
    """The run's storage did not answer. The message is for the log: it may name the store's endpoint."""


class TooLarge(Exception):
    """The object is larger than the caller's limit; nothing of it was read beyond the limit."""

    def __init__(self, uri: str, size: int, limit: int) -> None:
        super().__init__(f"{uri} holds {size} bytes, more than the limit of {limit}")
        self.size, self.limit = size, limit


class Outside(Exception):
    """A local file resolves (through a symbolic link or `..`) outside the folder it must be read from."""


def inside(path: Path, root: Path) -> Path:
    """`path` resolved, when it lies in `root` resolved; raises Outside otherwise (a link pointing elsewhere)."""
    real, real_root = path.resolve(), root.resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise Outside(f"{path} resolves outside {root}")
    return real


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


def read_bounded(uri: str, max_bytes: int, root: str) -> bytes:
    """The whole object when it holds at most `max_bytes`; TooLarge otherwise (S3: one ranged GET of `max_bytes + 1`
    bytes, so a huge object is never downloaded). A local file must resolve inside `root`."""
    path = local_path(uri)
    if path is not None:
        root_path = local_path(root)
        real = inside(path, root_path) if root_path is not None else path
        data = _read_local(real, None, limit=max_bytes + 1)
    else:
        bucket, key = _split_s3(uri)
        try:
            data = _s3().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"].read(max_bytes + 1)
        except Exception as exc:
            raise _s3_errors(exc, uri) from exc
    if len(data) > max_bytes:
        raise TooLarge(uri, len(data), max_bytes)
    return data


def read_bytes(uri: str, tail_bytes: int | None = None, root: str | None = None) -> bytes:
    """The object's bytes (only its last `tail_bytes` when given: S3 reads them with a suffix Range request, a local
    file by seeking from its end). With `root`, a local file must resolve inside it."""
    path = local_path(uri)
    if path is not None:
        root_path = local_path(root) if root else None
        return _read_local(inside(path, root_path) if root_path is not None else path, tail_bytes)
    bucket, key = _split_s3(uri)
    extra = {"Range": f"bytes=-{tail_bytes}"} if tail_bytes else {}
    try:
        body: bytes = _s3().get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    except Exception as exc:  # botocore's errors have no common base worth naming; translated once here
        raise _s3_errors(exc, uri) from exc
    return body


def read_range(uri: str, start: int, length: int, root: str | None = None) -> tuple[bytes, int]:
    """At most `length` bytes of the object from byte `start`, and the object's total size. With `root`, a local
    file must resolve inside it (Outside otherwise)."""
    path = local_path(uri)
    if path is not None:
        root_path = local_path(root) if root else None
        if root_path is not None:
            path = inside(path, root_path)
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(min(start, size))
                return f.read(length), size
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise FileNotFoundError(str(path)) from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {path}: {exc.strerror}") from exc
    bucket, key = _split_s3(uri)
    try:
        answer = _s3().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
        body: bytes = answer["Body"].read()
    except Exception as exc:
        if _error_code(exc) == "InvalidRange":  # an empty object, or `start` beyond its end
            return b"", _size_from(exc)
        raise _s3_errors(exc, uri) from exc
    content_range = str(answer.get("ContentRange") or "")
    total = content_range.rpartition("/")[2]
    return body, int(total) if total.isdigit() else len(body)


def _error_code(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def _size_from(exc: Exception) -> int:
    """The object's size an InvalidRange answer names (`ActualObjectSize`), else 0."""
    error = getattr(exc, "response", {}).get("Error", {})
    size = str(error.get("ActualObjectSize", "0"))
    return int(size) if size.isdigit() else 0


def _read_local(path: Path, tail_bytes: int | None, limit: int = -1) -> bytes:
    try:
        with path.open("rb") as f:
            if tail_bytes:
                size = f.seek(0, 2)
                f.seek(max(0, size - tail_bytes))
            return f.read(limit)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise FileNotFoundError(str(path)) from exc
    except OSError as exc:
        raise StorageUnavailable(f"cannot read {path}: {exc.strerror}") from exc


def list_files(prefix_uri: str, limit: int = 1000) -> list[str]:
    """URIs of the files directly under `prefix_uri` (not recursive), sorted; at most `limit` of them. Local entries
    that resolve outside the folder (symbolic links elsewhere) are left out."""
    path = local_path(prefix_uri)
    if path is not None:
        try:
            return sorted(str(p) for p in path.iterdir() if p.is_file() and _stays_in(p, path))[:limit]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StorageUnavailable(f"cannot list {path}: {exc.strerror}") from exc
    bucket, key = _split_s3(prefix_uri.rstrip("/") + "/")
    try:
        pages = _s3().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key, Delimiter="/", PaginationConfig={"MaxItems": limit})
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])][:limit]
    except Exception as exc:
        error = _s3_errors(exc, prefix_uri)
        if isinstance(error, FileNotFoundError):
            return []
        raise error from exc
    return sorted(f"s3://{bucket}/{k}" for k in keys)


def _stays_in(path: Path, root: Path) -> bool:
    try:
        inside(path, root)
    except Outside:
        return False
    return True


def tail_lines(data: bytes, lines: int) -> str:
    """The last `lines` lines of `data` as text (undecodable bytes replaced)."""
    text = data.decode("utf-8", errors="replace")
    kept = text.splitlines(keepends=True)[-lines:] if lines else []
    return "".join(kept)
