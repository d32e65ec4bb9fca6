"""Files written so that a reader (or a resumed run) never sees a partial one.

The content goes to a fresh temporary file beside the target (a unique name per call, so threads
and processes writing the same target never share one), is flushed to disk, then renamed over the
target; the folder is flushed too where the system allows it. A failed write removes its temporary
file. Files get ordinary permissions: 0666 less the umask (0644 with the usual umask 022).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a new temporary file name beside `path` for the block to write; when the block succeeds the file
    replaces `path`, when it raises (or is interrupted) the temporary file is removed."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")  # hidden; 64 random bits per call
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
    except OSError as error:
        raise _named_for(error, temporary, path) from None
    try:
        mode = stat.S_IMODE(os.stat(temporary).st_mode)
        yield temporary
        os.chmod(temporary, mode)  # writers that re-create the file (safetensors makes it 0600) get the ordinary mode back
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with suppress(FileNotFoundError):
            os.remove(temporary)
        if isinstance(error, OSError) and temporary in (error.filename, error.filename2):
            raise _named_for(error, temporary, path) from None
        raise
    _fsync_folder(folder)


def _named_for(error: OSError, temporary: str, path: str) -> OSError:
    """The same error about the user's file name: the temporary name means nothing to them."""
    if error.errno is None:
        return type(error)(str(error).replace(temporary, path))
    return type(error)(error.errno, error.strerror, path)


def _fsync_folder(folder: str) -> None:
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened (Windows) or synced."""
    if os.name == "nt":
        return
    with suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """safetensors.torch.save_file, atomically (tensors made contiguous)."""
    from safetensors.torch import save_file

    with atomic_path(path) as temporary:
        save_file({k: v.contiguous() for k, v in tensors.items()}, temporary, metadata=metadata)
