"""Wall-clock timing shared by the bench scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 5, warmup: bool = True) -> float:
    """Best wall time of `repeats` calls of `fn` (after one untimed call if `warmup`), in seconds."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
