"""A run's metrics series from `<checkpoint prefix>/logs/metrics.jsonl`, bounded in bytes read and points answered.

Every runner (hf, nemo, meta) writes the same rows through `trainer.reporting.Reporter.metrics`: `kind: "train"` rows
carry `loss`, `lr`, `tokens_per_s`, `grad_norm`, `epoch`; `kind: "eval"` rows carry `eval_loss`; one `kind: "summary"`
row closes a run (`steps_per_s`, `train_runtime`). Rows of the same step merge into one point; a later row of the
same kind and step replaces an earlier one (a resumed attempt redoes the steps after its checkpoint).

Bounds, whatever the file's size:
- bytes: a file up to `max_bytes` is read whole; a longer one is read as `WINDOWS` windows of `max_bytes / WINDOWS`
  bytes spread evenly from its first byte to its last, so the series still spans the whole run (`complete: false`
  says rows between the windows were not read);
- points: at most `max_points` (the `max_points` query parameter, default `DEFAULT_POINTS`, at most `MAX_POINTS`).
  Beyond that consecutive points are grouped into `max_points` buckets; each bucket becomes one point at its last
  step holding the mean of each metric over the rows that have it (so sparse eval points survive downsampling).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from broker import run_files

DEFAULT_POINTS, MAX_POINTS = 500, 5000
#: Bytes of metrics.jsonl read per request at most (about 25,000 rows): the Flask config's `METRICS_MAX_BYTES`.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
WINDOWS = 8
#: What a point may hold besides `step`: the train row's fields, the eval row's, and the run's clock.
TRAIN_FIELDS = ("loss", "lr", "tokens_per_s", "grad_norm", "epoch")
EVAL_FIELDS = ("eval_loss",)
FIELDS = (*TRAIN_FIELDS, *EVAL_FIELDS, "elapsed_s")
SUMMARY_FIELDS = ("step", "loss", "steps_per_s", "train_runtime")


def read_windows(uri: str, max_bytes: int, root: str | None = None) -> tuple[list[bytes], bool]:
    """Whole lines of the file within the byte budget, and whether that was the whole file. With `root`, a local
    file must resolve inside it.

    Raises FileNotFoundError when there is no file, `run_files.Outside` when it resolves outside `root`,
    `run_files.StorageUnavailable` when the store does not answer.
    """
    window = max(1, max_bytes // WINDOWS)
    first, size = run_files.read_range(uri, 0, window, root)
    if size <= window:
        return [first], True
    if size <= max_bytes:
        rest, _ = run_files.read_range(uri, window, size - window, root)
        return [first + rest], True
    chunks = [_whole_lines(first, at_start=True, at_end=False)]
    for i in range(1, WINDOWS):
        start = (size - window) * i // (WINDOWS - 1)
        data, _ = run_files.read_range(uri, start, window, root)
        chunks.append(_whole_lines(data, at_start=False, at_end=start + len(data) >= size))
    return chunks, False


def _whole_lines(data: bytes, at_start: bool, at_end: bool) -> bytes:
    """`data` without the line cut at its front (unless it starts the file) or at its back (unless it ends it)."""
    if not at_start:
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    if not at_end:
        data = data[: data.rfind(b"\n") + 1]
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None  # NaN and ±Infinity are not JSON


def parse_rows(chunks: Iterable[bytes]) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """Points by step and the last summary row; lines that are not metrics rows are skipped."""
    points: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] | None = None
    for chunk in chunks:
        for line in chunk.splitlines():
            try:
                row = json.loads(line)
                step = row["step"]
            except (ValueError, KeyError, TypeError):
                continue
            if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                continue
            kind = row.get("kind") or ("eval" if "eval_loss" in row else "train")
            if kind == "summary":
                summary = {k: _number(row.get(k)) for k in SUMMARY_FIELDS}
                summary["step"] = step
                continue
            names = EVAL_FIELDS if kind == "eval" else TRAIN_FIELDS if kind == "train" else ()
            if not names:
                continue
            point = points.setdefault(step, {"step": step})
            for name in names:
                point[name] = _number(row.get(name))
            elapsed = _number(row.get("elapsed_s"))
            if elapsed is not None:
                point["elapsed_s"] = elapsed
    return points, summary


def downsample(points: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most `max_points` points: consecutive points grouped into buckets, each the mean of its rows per metric
    at the bucket's last step. Points are returned with every field of FIELDS (None where nothing was logged)."""
    full = [{"step": p["step"], **{k: p.get(k) for k in FIELDS}} for p in points]
    if len(full) <= max_points:
        return full
    out = []
    n = len(full)
    for i in range(max_points):
        bucket = full[i * n // max_points: (i + 1) * n // max_points]
        merged: dict[str, Any] = {"step": bucket[-1]["step"]}
        for name in FIELDS:
            values = [p[name] for p in bucket if p[name] is not None]
            if name == "elapsed_s":
                merged[name] = values[-1] if values else None
            else:
                merged[name] = sum(values) / len(values) if values else None
        out.append(merged)
    return out


def series(uri: str, max_points: int, max_bytes: int, root: str | None = None) -> dict[str, Any] | None:
    """The bounded series of the metrics file at `uri` (None when there is none yet, or when a local file resolves
    outside `root`)."""
    try:
        chunks, complete = read_windows(uri, max_bytes, root)
    except (FileNotFoundError, run_files.Outside):
        return None
    points, summary = parse_rows(chunks)
    ordered = [points[s] for s in sorted(points)]
    return {"points": downsample(ordered, max_points), "total_points": len(ordered),
            "downsampled": len(ordered) > max_points, "complete": complete, "summary": summary}
