"""Pure checks of the request's string formats: storage URIs, image references, Kubernetes names and keys.

Each `check_*` returns the normalised value or raises `marshmallow.ValidationError` with a message a caller can act
on. They hold no state, so the schemas and the tests use them directly.
"""

from __future__ import annotations

import ipaddress
import re

from marshmallow import ValidationError

from broker.jobs import DNS1035_RE, DNS1123_LABEL_RE, LABEL_PREFIX, MANAGED_BY_LABEL, MAX_JOB_NAME

RUN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_S3_KEY_RE = re.compile(r"^[A-Za-z0-9!_.*'()=+,:@/-]*$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9!_.*'()=+,:@/ -]*$")
_QUALIFIED_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"^(?:(?P<registry>(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::[0-9]{{1,5}})?|[A-Za-z0-9-]+:[0-9]{{1,5}})/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def check_storage_uri(value: str) -> str:
    """`s3://bucket[/prefix]` with a valid bucket name, an absolute local path, or `file:///abs/path`.

    A trailing `/` is removed. `..` segments, empty segments and control characters are refused.
    """
    if value.startswith("s3://"):
        return _check_s3(value)
    if value.startswith("file://"):
        path = value.removeprefix("file://")
        if not path.startswith("/"):
            raise ValidationError("a file:// URI must hold an absolute path, like file:///data/runs")
        return "file://" + _check_path(path)
    if value.startswith("/"):
        return _check_path(value)
    raise ValidationError("must be s3://bucket[/prefix], an absolute local path, or a file:// URI")


def _check_s3(value: str) -> str:
    bucket, _, key = value.removeprefix("s3://").partition("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _is_ip(bucket):
        raise ValidationError(f"{bucket!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    key = key.rstrip("/")
    if not key:
        return f"s3://{bucket}"
    if len(key) > 900 or not _S3_KEY_RE.fullmatch(key) or _bad_segments(key):
        raise ValidationError("the S3 prefix holds characters, empty segments or '..' segments that are not allowed")
    return f"s3://{bucket}/{key}"


def _check_path(path: str) -> str:
    path = path.rstrip("/")
    if not path or len(path) > 1024 or not _PATH_RE.fullmatch(path) or _bad_segments(path.lstrip("/")):
        raise ValidationError("not an acceptable absolute path (no root, '..', empty segments or special characters)")
    return path


def _bad_segments(path: str) -> bool:
    return any(part in ("", ".", "..") for part in path.split("/"))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_image(value: str) -> str:
    """A container image reference: `[registry[:port]/]path[:tag][@sha256:digest]`, lower-case path."""
    if len(value) > 512 or not _IMAGE_RE.fullmatch(value):
        raise ValidationError("not a valid image reference, like ghcr.io/org/trainer:1.0")
    return value


def check_run_id(value: str) -> str:
    """A run id is one path segment of the storage layout: never `.`, `..` or a separator."""
    if not RUN_ID_RE.fullmatch(value) or value in (".", ".."):
        raise ValidationError("must be 1-63 characters of letters, digits, '.', '_' and '-', and not '.' or '..'")
    return value


def check_namespace(value: str, allowed: tuple[str, ...] = ()) -> str:
    if len(value) > 63 or not DNS1123_LABEL_RE.fullmatch(value):
        raise ValidationError("must be a DNS-1123 label: at most 63 of a-z, 0-9 and '-', alphanumeric at both ends")
    if allowed and value not in allowed:
        raise ValidationError(f"namespace not allowed; use one of: {', '.join(allowed)}")
    return value


def check_job_name(value: str) -> str:
    if len(value) > MAX_JOB_NAME or not DNS1035_RE.fullmatch(value):
        raise ValidationError(
            f"must be a DNS-1035 label of at most {MAX_JOB_NAME} characters: a-z, 0-9 and '-', starting with a letter"
        )
    return value


def check_k8s_key(key: str) -> str:
    """A Kubernetes label/annotation key `[prefix/]name`, outside the system's own prefixes."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN_RE.fullmatch(prefix)):
        raise ValidationError("the key's prefix must be a DNS subdomain")
    if not _QUALIFIED_NAME_RE.fullmatch(name):
        raise ValidationError("the key's name must be 1-63 of letters, digits, '-', '_', '.', alphanumeric at the ends")
    if key.startswith(LABEL_PREFIX) or key == MANAGED_BY_LABEL:
        raise ValidationError(f"keys under {LABEL_PREFIX} and {MANAGED_BY_LABEL} are reserved for the system")
    return key


def check_label_value(value: str) -> str:
    if not _LABEL_VALUE_RE.fullmatch(value):
        raise ValidationError("a label value is at most 63 of letters, digits, '-', '_', '.', alphanumeric at the ends")
    return value


def check_identifier(key: str) -> str:
    if not IDENTIFIER_RE.fullmatch(key):
        raise ValidationError("must be an identifier: letters, digits and '_', not starting with a digit")
    return key
