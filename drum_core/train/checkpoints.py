"""<out>/checkpoint.pt: model, optimizer, scheduler, every process's RNG state and the data position.

Written atomically (rank 0), read with weights_only=True; a checkpoint only resumes the run
that wrote it (same recipe options, same number of training captions).
"""

from __future__ import annotations

import os
import random
import sys

import torch

from ..atomic import atomic_path
from .distributed import Processes

CHECKPOINT_FORMAT = "drum-train-checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or belongs to another run; the message names the file and says what to do."""


def rng_state(processes: Processes) -> dict:
    """Python's RNG state and every process's torch (and CUDA) RNG state [W, ...]; every process takes part."""
    state = {"python": random.getstate(), "torch": processes.gather(torch.get_rng_state())}
    if processes.device.type == "cuda":
        state["cuda"] = processes.gather(torch.cuda.get_rng_state(processes.device))
    return state


def restore_rng_state(rng: dict, processes: Processes) -> None:
    """Put back this process's RNG states; a run resumed on another number of processes keeps its own dropout draws."""
    random.setstate(rng["python"])
    rank = processes.rank
    if rng["torch"].shape[0] == processes.world_size:
        torch.set_rng_state(rng["torch"][rank])
        if processes.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"][rank], processes.device)
    elif rank == 0:
        print(f"resuming {rng['torch'].shape[0]}-process run on {processes.world_size}: dropout draws differ from here on", file=sys.stderr)


def write_checkpoint(path: str, checkpoint: dict) -> None:
    """torch.save(`checkpoint` with its format tag) to `path`, atomically."""
    with atomic_path(path) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, temporary)


def read_checkpoint(path: str, recipe: dict, train_count: int) -> dict | None:
    """The checkpoint at `path` (None when there is none); CheckpointError if it is unreadable or belongs to another run."""
    if not os.path.isfile(path):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({error}); move it away to start over") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a DrUM training checkpoint")
    saved = checkpoint["options"]
    changed = [f"{k}: {saved.get(k)} -> {recipe[k]}" for k in recipe if saved.get(k) != recipe[k]]
    if changed:
        raise CheckpointError(f"{path} belongs to a run with other settings ({'; '.join(changed)}): use another --out")
    if checkpoint["data"]["train_count"] != train_count:
        raise CheckpointError(
            f"{path}: the run had {checkpoint['data']['train_count']} training captions, the data now has {train_count}: use another --out"
        )
    return checkpoint
