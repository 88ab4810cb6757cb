"""Random fault injection for the Kubernetes API emulator: a share of requests answers 429 (with `Retry-After`),
500 or 503, times out (answered only after the client's timeout, and still applied — like an API server that
acted but was too slow to say so), or has its connection dropped before or after the server acted.

`emulator.chaos = Chaos(rate=0.3, seed=1)`; `chaos.injected` counts what was injected, by kind. `latency_s` delays
every request that is not faulted (a busy API server; not counted as a fault).
"""

from __future__ import annotations

import random
import threading
from collections import Counter

from tests.support.k8s_emulator import Fault

KINDS = ("429", "500", "503", "timeout", "drop", "drop_after")


class Chaos:
    def __init__(self, rate: float, *, kinds: tuple[str, ...] = KINDS, verbs: tuple[str, ...] | None = None,
                 retry_after_s: float = 1.0, timeout_s: float = 2.0, latency_s: float = 0.0, seed: int = 0) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.rate, self.kinds, self.verbs = rate, kinds, frozenset(verbs) if verbs else None
        self.retry_after_s, self.timeout_s, self.latency_s = retry_after_s, timeout_s, latency_s
        self.random = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self.injected: Counter[str] = Counter()
        self.enabled = True
        self._lock = threading.Lock()

    def pick(self, verb: str) -> Fault | None:
        """The fault for this request, or None (served normally)."""
        if not self.enabled or (self.verbs is not None and verb not in self.verbs):
            return None
        with self._lock:
            if self.random.random() >= self.rate:
                return Fault("slow", 1, None, delay_s=self.latency_s) if self.latency_s else None
            kind = self.random.choice(self.kinds)
            self.injected[kind] += 1
        if kind == "429":
            return Fault("status", 1, None, status=429, retry_after=self.retry_after_s)
        if kind in ("500", "503"):
            return Fault("status", 1, None, status=int(kind))
        if kind == "timeout":
            return Fault("slow", 1, None, delay_s=self.timeout_s)
        return Fault(kind, 1, None)

    def total(self) -> int:
        return sum(self.injected.values())
