"""Files written so that a reader (or a resumed run) never sees a partial one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary name beside `path`; when the block succeeds it replaces `path`."""
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    yield temporary
    os.replace(temporary, path)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """safetensors.torch.save_file, atomically (tensors made contiguous)."""
    from safetensors.torch import save_file

    with atomic_path(path) as temporary:
        save_file({k: v.contiguous() for k, v in tensors.items()}, temporary, metadata=metadata)
