"""Wall-clock timing and the markdown result table, shared by the bench scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def wall_times(fn: Callable[[], object], repeats: int, warmup: bool = True) -> list[float]:
    """Wall times of `repeats` calls of `fn` (after one untimed call if `warmup`), in seconds."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_of(fn: Callable[[], object], repeats: int = 5, warmup: bool = True) -> float:
    """Best wall time of `repeats` calls of `fn`, in seconds."""
    return min(wall_times(fn, repeats, warmup))


def median_of(fn: Callable[[], object], repeats: int = 7) -> float:
    """Median wall time of `repeats` calls of `fn` after one untimed call (stalls count, unlike best_of)."""
    return statistics.median(wall_times(fn, repeats))


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A markdown table: the header row, its separator, one line per row."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
