"""This process's place in a torchrun job: rank, world size, device, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Processes:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def start(cls, device: str | None = None) -> Processes:
        """Join the torchrun job if there is one (NCCL on GPUs, gloo on CPUs)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        chosen = torch.device(device)
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", local)
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        return cls(rank, world, chosen)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a small tensor over all processes."""
        if self.distributed:
            values = values.to(self.device)
            torch.distributed.all_reduce(values)
        return values.cpu()

    def gather(self, value: torch.Tensor) -> torch.Tensor:
        """[W, *value.shape]: `value` of every process (same shape everywhere)."""
        if not self.distributed:
            return value.unsqueeze(0)
        local = value.to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local)
        return torch.stack(parts).cpu()

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()
