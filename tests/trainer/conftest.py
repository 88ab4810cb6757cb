"""Trainer test fixtures: a moto S3 server over HTTP, the tiny model (built once per session through
`python -m trainer.tiny`) and a sample JSONL dataset. Fixtures here are shared by every runner's tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.s3 import S3Server
from trainer.tiny import write_sample_dataset


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 (in this process and in subprocesses, which inherit os.environ) at the moto server."""
    env = s3_server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the moto server (with `s3_env` applied)."""
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny GPT-2 + tokenizer, built once per session through the module's CLI."""
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([sys.executable, "-m", "trainer.tiny", "--out", str(out)], check=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200-row JSONL file with a `text` field."""
    return write_sample_dataset(tmp_path_factory.mktemp("dataset") / "train.jsonl", rows=200)
