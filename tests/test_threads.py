"""ThreadChooser: other processes' CPU use during the probe steps decides the thread count of the rest; always restored
(also when a PeCA run fails or is interrupted mid-forward)."""

import os
import time

import psutil
import pytest
import torch
from support.contention import spinning_process
from support.tiny_models import tiny_adapter

from drum_core import threads
from drum_core.threads import ThreadChooser, ThreadMemory, threads_left


@pytest.fixture
def all_cpus():
    """torch on every logical CPU, so that one more busy process oversubscribes the machine."""
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
    memory = ThreadMemory()
    for run in range(2):
        seen = []
        with ThreadChooser("cpu", memory) as chooser:
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


def test_thread_memory_is_bounded_and_clears():
    memory = ThreadMemory(limit=2)
    for threads_asked in (8, 4, 2):
        memory.remember(threads_asked, threads_asked - 1)
    assert len(memory) == 2 and memory.start(8) == 8  # the oldest left: a run of 8 starts with all its threads
    assert (memory.start(4), memory.start(2)) == (3, 1)
    memory.clear()
    assert len(memory) == 0 and memory.start(4) == 4


class Stop(Exception):
    """Raised by a hook in the middle of a PeCA run."""


@pytest.mark.skipif(psutil.cpu_count() < 2, reason="needs two CPUs")
@pytest.mark.parametrize("raised", [Stop, KeyboardInterrupt])
@pytest.mark.parametrize("call", ["forward", "encode_references"])
def test_a_peca_run_that_fails_mid_forward_restores_the_thread_count(raised, call, monkeypatch):
    """The adapter's last choice (1 thread of 2) holds inside its run only: after an exception or an interruption
    raised in block 1, the caller's count is back (torch.set_num_threads is process-wide)."""
    adapter = tiny_adapter("L", seed=5)
    generator = torch.Generator().manual_seed(5)
    query, states = (torch.randn(n, tokens, adapter.config.encoder_width, generator=generator) for n, tokens in ((1, 78), (2, 77)))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # forward is given encoded references: encoding them inside would run its own probes first, and on a quiet
        # machine they choose (and remember) 2 threads before block 1 is reached
        encoded = adapter.encode_references(states[1:])
        adapter.thread_memory.remember(2, 1)
        seen = []

        def fail(*_args):
            seen.append(torch.get_num_threads())
            raise raised("stopped mid-run")

        with pytest.raises(raised, match="stopped mid-run"), monkeypatch.context() as patched:
            if call == "forward":
                hook = adapter.tf[1].register_forward_pre_hook(fail)
                adapter(query, states[:1], encoded, [1.0], 0.3)
            else:  # block 1's reference keys/values (a plain method, no module call to hook)
                patched.setattr(adapter.tf[1].attn, "reference_keys_values", fail)
                adapter.encode_references(states[1:])
        if call == "forward":
            hook.remove()
        assert seen == [1]  # the chooser had set the adapter's last choice
        assert torch.get_num_threads() == 2  # restored
        adapter(query, states[:1], states[1:], [1.0], 0.3)  # a normal run: restored too
        assert torch.get_num_threads() == 2
        assert tiny_adapter("L", seed=6).thread_memory.start(2) == 2  # the choice is the adapter's own
    finally:
        torch.set_num_threads(before)
