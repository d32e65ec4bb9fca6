"""drum_core.atomic: a write either replaces the target whole or leaves it and its folder as they were."""

import json
import os
import stat
import threading

import pytest
import torch
from safetensors.torch import load_file

from drum_core.atomic import atomic_path, save_safetensors
from drum_core.peca import PeCA, PeCAConfig


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old", encoding="utf-8")
    for failure in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(failure)):
            with atomic_path(target) as temporary, open(temporary, "w", encoding="utf-8") as f:
                f.write("half of the new")
                raise failure
        assert os.listdir(tmp_path) == ["results.json"] and target.read_text(encoding="utf-8") == "old"
    shared = torch.zeros(4)
    with pytest.raises(RuntimeError, match="share memory"):  # a writer that fails inside safetensors, after the file was made
        save_safetensors({"a": shared, "b": shared}, tmp_path / "adapter.safetensors")
    assert os.listdir(tmp_path) == ["results.json"]


def test_a_successful_write_replaces_the_target_whole(tmp_path):
    target = tmp_path / "index.json"
    target.write_text("old", encoding="utf-8")
    with atomic_path(target) as temporary, open(temporary, "w", encoding="utf-8") as f:
        assert os.path.dirname(temporary) == str(tmp_path) and temporary != str(target)
        json.dump({"rows": 3}, f)
        assert target.read_text(encoding="utf-8") == "old"  # readers see the old file until the rename
    assert json.loads(target.read_text(encoding="utf-8")) == {"rows": 3} and os.listdir(tmp_path) == ["index.json"]


def test_threads_writing_one_target_never_share_a_temporary_file(tmp_path):
    target, writers = tmp_path / "checkpoint.pt", 8
    inside = threading.Barrier(writers)  # every writer holds its temporary file at the same time
    names, errors = [], []

    def write(value: int) -> None:
        try:
            with atomic_path(target) as temporary:
                names.append(temporary)
                torch.save({"value": value}, temporary)
                inside.wait(timeout=60)
        except Exception as error:  # reported below: a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=write, args=(value,)) for value in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(names)) == writers
    assert torch.load(target, weights_only=True)["value"] in range(writers)  # one writer's whole file
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_ordinary_permissions(tmp_path, umask, mask, mode):
    umask(mask)
    adapter = tmp_path / "L.safetensors"
    PeCA(PeCAConfig("clip", 64, 64, 16, 1, 78)).save(adapter)  # safetensors alone would write 0600 whatever the umask
    save_safetensors({"x": torch.arange(4)}, tmp_path / "entry.safetensors")
    with atomic_path(tmp_path / "log.jsonl") as temporary, open(temporary, "w", encoding="utf-8") as f:
        f.write("{}\n")
    with atomic_path(tmp_path / "checkpoint.pt") as temporary:
        torch.save({"step": 1}, temporary)
    for name in ("L.safetensors", "entry.safetensors", "log.jsonl", "checkpoint.pt"):
        assert oct(stat.S_IMODE(os.stat(tmp_path / name).st_mode)) == oct(mode), name
    assert torch.equal(load_file(tmp_path / "entry.safetensors")["x"], torch.arange(4))
