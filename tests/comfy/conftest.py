"""In-process ComfyUI tier: the pack imported as ComfyUI imports it, real comfy.sd.CLIP objects."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `support` package

from support import comfy_env  # noqa: E402


@pytest.fixture(scope="session")
def pack():
    """{node_id: node class} of the pack, loaded into an in-process ComfyUI (CPU)."""
    return comfy_env.load_pack()


@pytest.fixture(scope="session")
def state(pack):
    """The pack's DrumState (nodes/state.py): the one object its node classes are bound to."""
    return next(iter(pack.values())).state()
