"""Fixtures shared by the core tests."""

import pytest
import torch


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub access and an empty hub cache, whatever the machine has; $DRUM_WEIGHTS unset."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("DRUM_WEIGHTS", raising=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run far faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
