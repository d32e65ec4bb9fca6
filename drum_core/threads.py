"""The intra-op thread count of a CPU run under contention, chosen by measuring the other processes.

When other processes hold cores, an all-threads run waits at every parallel step for the threads
that share those cores: 2-4x slower than idle on two cores, where one thread fewer runs about 1.5x.
PeCA's blocks are equal steps, so a run measures the CPU time the rest of the machine used during
two of its blocks (busy time of the CPUs this process may run on, minus its own). When other
processes held at least one of those cores (0.6 of one, rounded), and the run's threads plus those
cores exceed them, the rest of the run uses the cores left free. Only the process's CPUs count (its
affinity), so work pinned elsewhere on a larger host takes nothing from it. The next run starts with
that choice (contention tends to last: `ThreadMemory`, one per adapter) and its own probe corrects it
either way.

Lifetime of the thread count: `torch.set_num_threads` is process-wide, so a chooser sets it only inside
its `with` block and restores the caller's count when the block ends: normally, on an exception, and
on an interruption (KeyboardInterrupt, ComfyUI's InterruptProcessingException).

The process's own CPU time over wall time would not do: a run's serial parts keep it at 1.5-1.7
cores of 2 on an idle machine in ComfyUI's server, as low as under contention. The system's busy
time comes in 10 ms ticks (/proc/stat), so the probe counts whole cores only.
bench/bench_peca.py measures the effect.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

import psutil
import torch

PROBE_STEPS = 2
HELD_FROM = 0.6  # cores used by other processes, on average over the probe, that count as one held


def usable_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset), as indices into
    psutil's per-CPU times; None where the platform does not say (macOS) or the numbering has gaps
    (offline CPUs): then every CPU of the machine counts."""
    try:
        cpus = sorted(psutil.Process().cpu_affinity())
    except (AttributeError, NotImplementedError, psutil.Error):
        return None
    return cpus if cpus and cpus[-1] < len(psutil.cpu_times(percpu=True)) else None


def system_busy_seconds(cpus: list[int] | None = None) -> float:
    """CPU seconds all processes have used on `cpus` (default every CPU), summed (tick resolution); a
    hypervisor's steal counts (the CPU was not ours), guest time is already in user time (Linux)."""
    not_busy = ("idle", "iowait", "guest", "guest_nice")
    if cpus is None:
        per_cpu = [psutil.cpu_times()]
    else:
        every = psutil.cpu_times(percpu=True)
        per_cpu = [every[index] for index in cpus]
    return sum(sum(times) - sum(getattr(times, name, 0.0) for name in not_busy) for times in per_cpu)


class ThreadMemory:
    """The last run's choice per caller thread count, where the next run of the same owner starts (an adapter keeps
    one: `PeCA.thread_memory`). Bounded: one entry per thread count a caller ran with, at most `limit`."""

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._chosen: dict[int, int] = {}  # the caller's thread count -> the last run's choice

    def start(self, threads: int) -> int:
        """The thread count a run of `threads` starts with: the last run's choice, else `threads`."""
        return self._chosen.get(threads, threads)

    def remember(self, threads: int, chosen: int) -> None:
        self._chosen.pop(threads, None)
        self._chosen[threads] = chosen
        while len(self._chosen) > self.limit:
            del self._chosen[next(iter(self._chosen))]  # the oldest first

    def clear(self) -> None:
        self._chosen.clear()

    def __len__(self) -> int:
        return len(self._chosen)


class ThreadChooser:
    """Measures other processes' CPU use during the probe steps of a run of equal steps and sets
    the thread count of the rest to the cores they leave free.

        with ThreadChooser(device, memory, probe_step=1) as chooser:
            for block in blocks:
                with chooser.step():
                    ...

    A no-op off the CPU or with one thread. `memory`: where the last run's choice is read and this
    run's kept (None: every run starts with the caller's count). `probe_step`: the index of the first
    full, typical step (it and the next are the probes). `chosen`: the thread count of the steps run
    now (the last run's choice before the probes, this run's after). The count changes only inside the
    `with` block and is restored however the block ends (module docstring).
    """

    def __init__(self, device: torch.device | str, memory: ThreadMemory | None = None, probe_step: int = 0):
        self.threads = torch.get_num_threads()
        self.active = torch.device(device).type == "cpu" and self.threads > 1
        self.memory = memory
        self.probe_step = probe_step
        self.cores_held: float | None = None  # other processes' CPU seconds on this process's CPUs / wall seconds of the probes
        self.chosen = self.threads
        self._steps = 0
        self._cpus = usable_cpus() if self.active else None
        self._start: tuple[float, float, float] | None = None  # wall, own CPU, system busy at the first probe

    def __enter__(self) -> ThreadChooser:
        if self.active and self.memory is not None:
            self.chosen = self.memory.start(self.threads)
            if self.chosen != self.threads:
                torch.set_num_threads(self.chosen)  # the last run's choice, until this run's probes decide
        return self

    def __exit__(self, *exc) -> None:
        if torch.get_num_threads() != self.threads:  # however the block ended, BaseException included
            torch.set_num_threads(self.threads)

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One step; the probe steps are measured and decide the thread count of the following ones."""
        probe = self._steps - self.probe_step
        self._steps += 1
        if self.active and probe == 0:
            self._start = (time.perf_counter(), time.process_time(), system_busy_seconds(self._cpus))
        yield
        if self.active and probe == PROBE_STEPS - 1 and self._start is not None:
            self._choose()

    def _choose(self) -> None:
        wall, own, busy = self._start
        wall = time.perf_counter() - wall
        others = (system_busy_seconds(self._cpus) - busy) - (time.process_time() - own)
        self.cores_held = max(0.0, others / wall) if wall > 0 else 0.0
        cpus = len(self._cpus) if self._cpus else psutil.cpu_count() or self.threads
        chosen = threads_left(self.threads, cpus, self.cores_held)
        if chosen != self.chosen:
            torch.set_num_threads(chosen)
        self.chosen = chosen
        if self.memory is not None:
            self.memory.remember(self.threads, chosen)


def threads_left(threads: int, cpus: int, cores_held: float) -> int:
    """The thread count for a run of `threads` on `cpus` CPUs while other processes use `cores_held`
    on average: unchanged unless they hold a whole core (from 0.6) and the sum exceeds the CPUs."""
    held = math.floor(cores_held + 1 - HELD_FROM)
    if held < 1 or threads + held <= cpus:
        return threads
    return max(1, min(threads, cpus - held))
