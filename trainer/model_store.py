"""Where a run's starting model comes from: a local folder, a `file://` URI, an `s3://` prefix holding a
`save_pretrained` folder (downloaded first), or a hub id (returned unchanged for `from_pretrained`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from trainer.config import ConfigError
from trainer.storage import Storage, storage_for


def resolve_model(model_id: str, cache_dir: Path, storage: Storage | None = None, download: bool = True) -> str:
    """A local path or hub id that `from_pretrained` accepts.

    `s3://` prefixes are downloaded into `cache_dir` (call it on one process per node, then barrier; the node's other
    processes call it with `download=False` to get the same answer without downloading). A path-like id
    (absolute, `./`, `file://`) that does not exist raises `ConfigError`.
    """
    scheme = urlparse(model_id).scheme
    if scheme == "s3" and not download:
        return str(cache_dir)
    if scheme == "s3":
        return str(download_prefix(model_id, cache_dir, storage or storage_for(model_id)))
    path = Path(urlparse(model_id).path) if scheme == "file" else Path(model_id)
    if path.exists():
        return str(path)
    if scheme == "file" or model_id.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"model_id {model_id!r}: no such folder")
    return model_id


def download_prefix(prefix: str, local_dir: Path, storage: Storage) -> Path:
    base = prefix.rstrip("/") + "/"
    count = 0
    for uri in storage.list(base):
        storage.get_file(uri, local_dir / uri[len(base):])
        count += 1
    if count == 0:
        raise ConfigError(f"model_id {prefix!r}: no objects under that prefix")
    return local_dir
