"""Another process keeping one core busy, for the contention tests and bench/bench_peca.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def spinning_process(cpu: int | None = None) -> Iterator[subprocess.Popen]:
    """A `while True: pass` process, pinned to `cpu` (Linux) or left to the scheduler; spinning when
    the block starts, killed when it ends."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        if cpu is not None:
            os.sched_setaffinity(busy.pid, {cpu})
        time.sleep(0.5)  # started and spinning
        yield busy
    finally:
        busy.kill()
        busy.wait()
