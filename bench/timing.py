"""What the benchmarks share: an operations-per-second loop."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(fn: Callable[[], object], seconds: float, min_ops: int = 20) -> float:
    """Operations per second of fn over about `seconds` (after one warm-up call)."""
    fn()
    ops = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        ops += 1
        if ops >= min_ops and time.perf_counter() >= deadline:
            break
    return ops / (time.perf_counter() - start)
