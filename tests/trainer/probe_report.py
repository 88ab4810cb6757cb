"""What a probe run under torchrun (`tests.trainer.hf_probe`, `tests.trainer.nemo_probe`) leaves for its test. Imports
nothing of the services (no `devstack`), so a probe also runs in the NeMo interpreter (.venv-nemo)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_probe_report(out_var: str, rank: int, report: Mapping[str, Any]) -> None:
    """A probe's findings to `$<out_var>/rank-<rank>.json`."""
    out = Path(os.environ[out_var])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{rank}.json").write_text(json.dumps(report, indent=1))
