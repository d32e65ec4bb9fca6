"""Precision flags: one spelling rule for every command (`--dtype`, `--encoder-dtype`, `--cache-dtype`).

Importing this module does not import torch (the command line builds its parser without it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SPELLINGS = {  # accepted spelling -> torch name
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
DTYPE_NAMES = tuple(SPELLINGS)
SHORT_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}  # open_clip's `precision` names


def dtype_name(name: str) -> str:
    """Any accepted spelling ("fp16", "float16", "half", any case) -> the torch name ("float16")."""
    canonical = SPELLINGS.get(name.strip().lower())
    if canonical is None:
        raise ValueError(f"unknown precision {name!r}; one of {', '.join(DTYPE_NAMES)}")
    return canonical


def parse_dtype(name: str) -> torch.dtype:
    """Any accepted spelling -> the torch dtype ("bf16" -> torch.bfloat16)."""
    import torch

    return getattr(torch, dtype_name(name))


def short_name(name: str) -> str:
    """Any accepted spelling -> "fp32" / "fp16" / "bf16" (open_clip's `precision`)."""
    return SHORT_NAMES[dtype_name(name)]
