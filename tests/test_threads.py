"""ThreadChooser: other processes' CPU use during the probe steps decides the thread count of the rest; always restored."""

import os
import time

import psutil
import pytest
import torch
from support.contention import spinning_process

from drum_core import threads
from drum_core.threads import ThreadChooser, threads_left


@pytest.fixture
def all_cpus(monkeypatch):
    """torch on every logical CPU, so that one more busy process oversubscribes the machine; no
    choice remembered from earlier runs, and none left for later tests."""
    monkeypatch.setattr(threads, "_STARTING_THREADS", {})
    before = torch.get_num_threads()
    torch.set_num_threads(psutil.cpu_count())
    yield psutil.cpu_count()
    torch.set_num_threads(before)


@pytest.fixture
def busy_process():
    """Another process spinning on one core."""
    with spinning_process() as busy:
        yield busy


@pytest.fixture
def busy_on_cpu1():
    """Another process spinning, pinned to CPU 1."""
    with spinning_process(cpu=1) as busy:
        yield busy


@pytest.fixture
def pinned_to_cpu0():
    """This process (its calling thread, which the chooser reads) allowed on CPU 0 only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    yield
    os.sched_setaffinity(0, before)


needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or psutil.cpu_count() < 2, reason="needs Linux CPU affinity and two CPUs"
)


@pytest.mark.parametrize(
    ("threads", "cpus", "cores_held", "expected"),
    [
        (2, 2, 0.0, 2),  # idle
        (2, 2, 0.55, 2),  # below a whole core (tick noise, short bursts)
        (2, 2, 0.6, 1),  # one core held
        (2, 2, 1.9, 1),  # never below one thread
        (8, 8, 2.7, 5),  # three held: the five left
        (4, 16, 3.0, 4),  # the machine has room: unchanged
        (16, 16, 1.0, 15),
    ],
)
def test_threads_left_uses_the_cores_other_processes_leave(threads, cpus, cores_held, expected):
    assert threads_left(threads, cpus, cores_held) == expected


@pytest.mark.skipif(psutil.cpu_count() < 2, reason="needs two CPUs")
def test_a_busy_process_during_the_probes_takes_one_thread_for_the_rest(all_cpus, busy_process):
    seen = []
    with ThreadChooser("cpu", probe_step=1) as chooser:
        for index in range(5):
            with chooser.step():
                if index in (1, 2):  # the probes: this process idles, the busy one holds a core
                    time.sleep(0.1)
                seen.append(torch.get_num_threads())
    assert chooser.cores_held >= 0.6
    assert seen[:3] == [all_cpus] * 3 and seen[3] == seen[4] == chooser.chosen <= all_cpus - 1
    assert torch.get_num_threads() == all_cpus  # restored


@pytest.mark.skipif(psutil.cpu_count() < 2, reason="needs two CPUs")
def test_the_thread_count_is_restored_when_a_step_fails(all_cpus, busy_process):
    with pytest.raises(RuntimeError, match="interrupted"):
        with ThreadChooser("cpu") as chooser:
            for _probe in range(2):
                with chooser.step():
                    time.sleep(0.1)
            assert torch.get_num_threads() < all_cpus
            with chooser.step():
                raise RuntimeError("interrupted")
    assert torch.get_num_threads() == all_cpus


def test_no_probe_off_the_cpu_or_with_one_thread():
    before = torch.get_num_threads()
    try:
        for device, threads in (("meta", 2), ("cpu", 1)):
            torch.set_num_threads(threads)
            with ThreadChooser(device) as chooser:
                for _step in range(3):
                    with chooser.step():
                        time.sleep(0.01)
            assert chooser.cores_held is None and chooser.chosen == threads and torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(psutil.cpu_count() < 2, reason="needs two CPUs")
def test_the_next_run_starts_with_the_last_choice(all_cpus, busy_process):
    for run in range(2):
        seen = []
        with ThreadChooser("cpu") as chooser:
            for _step in range(3):
                with chooser.step():
                    seen.append(torch.get_num_threads())
                    time.sleep(0.1)
        if run == 0:
            first_choice = chooser.chosen
            assert seen[:2] == [all_cpus] * 2 and first_choice < all_cpus
        else:
            assert seen[0] == first_choice  # the probes run with the last choice, not all threads
        assert torch.get_num_threads() == all_cpus


@needs_affinity
def test_busy_time_is_counted_on_the_cpus_asked_for(busy_on_cpu1):
    """Robust on a shared machine: the reads are never simultaneous, so the machine-wide count is checked to lie
    between the per-CPU sums read just before and just after it (each counter only grows), not to equal one."""
    cpus = [[cpu] for cpu in range(len(psutil.cpu_times(percpu=True)))]

    def per_cpu() -> list[float]:
        return [threads.system_busy_seconds(selection) for selection in cpus]

    start = per_cpu()
    time.sleep(0.5)
    low, every, high = per_cpu(), threads.system_busy_seconds(), per_cpu()
    assert low[1] - start[1] >= 0.3  # the process spinning on CPU 1 (other processes on CPU 1 only add to it)
    tick = 0.02 * len(cpus)  # the counters' resolution (USER_HZ 100), once per CPU
    assert sum(low) - tick <= every <= sum(high) + tick


@needs_affinity
def test_work_pinned_to_other_cpus_holds_none_of_this_process(all_cpus, busy_on_cpu1, pinned_to_cpu0):
    """Allowed on CPU 0 only, the process spinning on CPU 1 is not counted (machine-wide it would be)."""
    assert threads.usable_cpus() == [0]
    wall, own, busy = time.perf_counter(), time.process_time(), threads.system_busy_seconds()
    with ThreadChooser("cpu") as chooser:
        for _probe in range(2):
            with chooser.step():
                time.sleep(0.2)
    wall = time.perf_counter() - wall
    machine_wide = ((threads.system_busy_seconds() - busy) - (time.process_time() - own)) / wall
    assert machine_wide - chooser.cores_held >= 0.6
    assert chooser.chosen == threads_left(all_cpus, 1, chooser.cores_held)
