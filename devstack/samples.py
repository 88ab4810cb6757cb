"""The product's sample request (an 8B model on 2 nodes x 8 GPUs), kept once in `docs/examples/request.json`: the API
reference shows it, the tests submit it, the demo adapts it to this machine, the benchmarks store it."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from devstack.procs import REPO_ROOT

SAMPLE_REQUEST_FILE = REPO_ROOT / "docs" / "examples" / "request.json"


@cache
def _sample() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SAMPLE_REQUEST_FILE.read_text())
    return loaded


def sample_request(**overrides: Any) -> dict[str, Any]:
    """A fresh copy of the sample request, with `overrides` replacing its fields."""
    return copy.deepcopy(_sample()) | overrides
