"""Fixtures shared by the standalone (diffusers / CLI) tests."""

import pytest


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub access and an empty hub cache, whatever the machine has; $DRUM_WEIGHTS unset."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("DRUM_WEIGHTS", raising=False)
