"""Equation 3 of the paper: how close a vector is to the target prompt and to the user's weighted history.

sim(e, r_i, p_i) = 100 * cos(e, r_i) * p_i
target  = sim(e, r_target, 1)
history = sum_i sim(e, r_i, p_i) / sum_i p_i        (all p_i = 1: the plain mean)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

SCORES = ("clip_target", "clip_history", "text_target", "text_history")  # the scores of one user and variant


def target_history_scores(
    e: torch.Tensor, target: torch.Tensor, history: torch.Tensor, intensities: Sequence[float] | torch.Tensor
) -> tuple[float, float]:
    """(target, history) of equation 3: e [D], target [D], history [N, D], intensities [N] = p_i."""
    p = torch.as_tensor(intensities, dtype=torch.float64)
    if p.numel() != history.shape[0] or float(p.sum()) <= 0:
        raise ValueError(f"history of {history.shape[0]} prompts needs as many intensities with a positive sum, got {p.tolist()}")
    e = e.double().reshape(1, -1)
    target_score = 100 * F.cosine_similarity(e, target.double().reshape(1, -1)).item()
    history_score = float((100 * F.cosine_similarity(e, history.double()) * p).sum() / p.sum())
    return target_score, history_score
