"""`trainctl metrics NAME`: a run's metrics series in a terminal — a sparkline per curve, then a compact table.

    $ trainctl metrics hf-fx-ruleset-v3-2025-11-26-01-1a2b3c4d --points 6
    hf-fx-ruleset-v3-2025-11-26-01-1a2b3c4d  running  attempt 1  6 of 120 points (averaged)
    loss       █▅▃▂▁▁  9.812 → 2.147
    eval_loss  ▃▁       2.450 → 2.101
    step  loss   eval_loss  lr        tokens/s
    20    9.812  -          0.001     5,020
    …
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TextIO

BARS = "▁▂▃▄▅▆▇█"
CURVES = ("loss", "eval_loss", "lr", "tokens_per_s")
COLUMNS = (("step", "step"), ("loss", "loss"), ("eval_loss", "eval_loss"), ("lr", "lr"), ("tokens/s", "tokens_per_s"))


def sparkline(values: Sequence[float]) -> str:
    """One bar per value, scaled between the smallest and the largest."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    return "".join(BARS[min(len(BARS) - 1, int((v - lo) / span * len(BARS))) if span else 0] for v in finite)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def render(body: dict[str, Any], out: TextIO) -> None:
    points = body["points"]
    note = f"{len(points)} of {body['total_points']} points" + (" (averaged)" if body.get("downsampled") else "")
    if not body.get("complete", True):
        note += ", sampled from a long file"
    print(f"{body['name']}  {body.get('status', '')}  attempt {body.get('attempt')}  {note}", file=out)
    for name in CURVES:
        values = [p[name] for p in points if p.get(name) is not None]
        if values:
            print(f"{name:<13}{sparkline(values)}  {fmt(values[0])} → {fmt(values[-1])}", file=out)
    rows = [[fmt(p.get(key)) for _, key in COLUMNS] for p in points]
    widths = [max(len(title), *(len(r[i]) for r in rows)) for i, (title, _) in enumerate(COLUMNS)] if rows else []
    if rows:
        print("  ".join(t.ljust(w) for (t, _), w in zip(COLUMNS, widths, strict=True)).rstrip(), file=out)
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    summary = body.get("summary")
    if summary:
        print(f"done at step {summary.get('step')}: {fmt(summary.get('steps_per_s'))} steps/s over "
              f"{fmt(summary.get('train_runtime'))}s", file=out)
