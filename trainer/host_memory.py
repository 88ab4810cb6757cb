"""Host (CPU) memory: hand freed tensor memory back to the OS instead of keeping it in glibc's heap.

torch's CPU allocator is glibc `malloc`. glibc serves a request from `mmap` (returned to the OS on `free`) only above
its mmap threshold, which starts at 128 KiB and *rises* to the size of every mmapped block freed, up to 32 MiB.
After a few frees a training process therefore serves its tensors under 32 MiB (an FSDP unit's all-gather buffer,
one block's gradients, reduce-scatter inputs, DCP staging pieces) from the heap and its per-thread arenas, where
freed memory stays in the process (fragmented, counted in RSS) instead of being reused or returned. Measured with
`bench/model_scale.py` (124M GPT-2, CPU, FSDP over 2 processes, hf runner): peak RSS per rank 3.3 GB with glibc's
default, 2.1 GB with a fixed 1 MiB threshold.

`configure_malloc()` fixes the threshold (which also turns glibc's dynamic adjustment off) at the start of every
trainer process that is one of several ranks (`WORLD_SIZE` > 1, as torchrun sets it): sharding is where the churn of
large freed buffers is. A single process is left to glibc's default: there the threshold saved 0–6% of peak RSS
(124M model, 1 process: hf 2,863 → 2,812 MB, meta 4,262 → 3,987 MB) and cost 5–20% of a small model's step time
(every freed tensor over 1 MiB is returned and faulted in again on the next step; bench/runner_bench.py, py-spy).
`TRAINER_MALLOC_MMAP_THRESHOLD=<bytes>` sets a threshold whatever the world size, `0` keeps glibc's default; left
alone too: a process whose environment sets `MALLOC_MMAP_THRESHOLD_` itself (glibc reads it at start-up) and a C
library without `mallopt` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h> parameter number
DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: above every small bookkeeping allocation, below any tensor that matters


def mmap_threshold(environ: Mapping[str, str]) -> int:
    """The threshold to set in bytes, 0 for none (see the module docstring)."""
    if "MALLOC_MMAP_THRESHOLD_" in environ:
        return 0
    raw = environ.get("TRAINER_MALLOC_MMAP_THRESHOLD", "").strip()
    if not raw:
        return DEFAULT_THRESHOLD if _world_size(environ) > 1 else 0
    if not raw.isdigit():  # the trainer's contract for a setting it cannot use: one line, exit status 2
        print(f"error: TRAINER_MALLOC_MMAP_THRESHOLD must be a number of bytes (0: glibc's default), not {raw!r}",
              file=sys.stderr)
        raise SystemExit(2)
    return int(raw)


def _world_size(environ: Mapping[str, str]) -> int:
    raw = environ.get("WORLD_SIZE", "").strip()
    return int(raw) if raw.isdigit() else 1


def configure_malloc(environ: Mapping[str, str] | None = None) -> int:
    """Set glibc's mmap threshold for this process; returns the bytes set, 0 when left alone."""
    threshold = mmap_threshold(os.environ if environ is None else environ)
    if threshold <= 0:
        return 0
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return 0
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return threshold if mallopt(M_MMAP_THRESHOLD, threshold) == 1 else 0
