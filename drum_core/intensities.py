"""Preference intensities p_i (docs/method.md §3): one rule for every place that takes them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def is_intensity(value: float) -> bool:
    """A valid preference intensity: finite and >= 0."""
    return math.isfinite(value) and value >= 0


def check_intensities(
    values: Sequence[float] | torch.Tensor | None,
    count: int,
    what: str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """`values` [count] as a tensor (None: all 1); ValueError naming `what` and the first bad index."""
    if values is None:
        return torch.ones(count, dtype=dtype, device=device)
    p = torch.as_tensor(values, dtype=dtype, device=device).reshape(-1)
    if p.numel() != count:
        raise ValueError(f"{what}: {p.numel()} preference intensities for {count} prompts")
    bad = (~torch.isfinite(p)) | (p < 0)
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        raise ValueError(f"{what}: preference intensities must be finite and >= 0; index {index} is {p[index].item()}")
    return p
