"""Where the demo's runs live: a local folder, or an S3 endpoint started for the demo (moto's server over HTTP).

Either way the demo only hands URIs to the API; the trainer writes through its own storage layer and the API reads
progress and logs through its own reader. `files()` lists what a run wrote, for showing the checkpoint layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from devstack import wait_for
from devstack.s3 import answers, s3_client

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"}
RUNS_BUCKET, DATA_BUCKET = "demo-training", "demo-datasets"


class RunStorage(Protocol):
    label: str
    base_uri: str

    def env(self) -> dict[str, str]: ...

    def dataset_uri(self, local_file: Path) -> str: ...

    def files(self, run_path: str) -> list[tuple[str, int]]:
        """(path relative to `run_path`, size) of every file under `<base>/<run_path>`, sorted."""
        ...


class LocalRuns:
    def __init__(self, root: Path) -> None:
        self.root = root / "runs"
        self.base_uri = str(self.root)
        self.label = f"local folder {self.root}"

    def env(self) -> dict[str, str]:
        return {}

    def dataset_uri(self, local_file: Path) -> str:
        return str(local_file)

    def files(self, run_path: str) -> list[tuple[str, int]]:
        top = self.root / run_path
        if not top.is_dir():
            return []
        return sorted((str(p.relative_to(top)), p.stat().st_size) for p in top.rglob("*") if p.is_file())


class S3Runs:
    """Buckets on an S3 endpoint (the demo starts `moto_server` there before the services)."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.base_uri = f"s3://{RUNS_BUCKET}/runs"
        self.label = f"S3 endpoint {endpoint_url} (moto), bucket {RUNS_BUCKET}"
        self._client: Any = None

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint_url, **CREDENTIALS}

    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.endpoint_url, CREDENTIALS)
        return self._client

    def wait_ready(self, timeout_s: float = 30) -> None:
        wait_for(lambda: answers(self.client()), timeout_s, f"the S3 endpoint {self.endpoint_url}", interval=0.2)
        for bucket in (RUNS_BUCKET, DATA_BUCKET):
            self.client().create_bucket(Bucket=bucket)

    def dataset_uri(self, local_file: Path) -> str:
        """Upload the dataset as one shard of a prefix, like the seed's `s3://…/fx/v3/`."""
        self.client().upload_file(str(local_file), DATA_BUCKET, "fx/v3/part-00000.jsonl")
        return f"s3://{DATA_BUCKET}/fx/v3/"

    def files(self, run_path: str) -> list[tuple[str, int]]:
        prefix = f"runs/{run_path}/"
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=RUNS_BUCKET, Prefix=prefix)
        return sorted((o["Key"][len(prefix):], o["Size"]) for page in pages for o in page.get("Contents", []))


def layout(files: list[tuple[str, int]], depth: int = 2) -> list[str]:
    """An indented tree of `files`, `depth` folders deep; deeper folders are summarised by file count and size."""
    lines: list[str] = []
    shown: set[str] = set()
    for path, size in files:
        parts = path.split("/")
        for level in range(min(len(parts) - 1, depth + 1)):
            folder = "/".join(parts[: level + 1])
            if folder in shown:
                continue
            shown.add(folder)
            if level < depth:
                lines.append(f"{'  ' * level}{parts[level]}/")
            else:
                inside = [s for p, s in files if p.startswith(folder + "/")]
                lines.append(f"{'  ' * level}{parts[level]}/  ({len(inside)} files, {sum(inside):,} bytes)")
        if len(parts) - 1 <= depth:
            lines.append(f"{'  ' * (len(parts) - 1)}{parts[-1]}  ({size:,} bytes)")
    return lines
