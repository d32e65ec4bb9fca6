"""Coreset sampling of a prompt history (docs/method.md §4, Algorithm 1), done right.

    sim(e, r_i, p_i) = 100 * cos(e, r_i) * p_i
    n = max(1, round(ratio * N));  A = k random prompts (seeded)
    D_i = mean_{a in A} sim(a, e_i, p_i)
    repeat n times: s = argmax D (ties -> lowest index); D = min(D, sim(e_s, e_i, p_i)); D_s = -inf

The rule works on similarities, so it favours central, typical prompts of the dominant
(p-weighted) themes — the published behaviour. `diverse=True` is the k-center variant on
cosine distances (the same first pick, then farthest-first: far-apart prompts), never the default.

Speed: the greedy loop needs one similarity row per pick. Rows are computed in blocks for
the current best candidates with one matrix product (compute-bound), and a step only goes
back to the matrix when its pick falls outside the rows already computed. The picks are
identical to the one-row-per-step loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .defaults import RATIO, SEED, K
from .intensities import check_intensities

SIM_SCALE = 100.0
# The default bound on references (the Coreset Sampler's max_count, the CLI's --max-count): the adapters cache
# 2 x 10 blocks x 77 tokens x width float32 keys/values per reference and context layer (SDXL: 19.6 MiB a reference),
# so 64 references take 1.22 GiB on SDXL, 0.29 GiB on SD1, whatever the history's size (docs/performance.md). The paper's
# unbounded 10 % is max_count 0: 2,000 references and 38 GiB on SDXL for a 20,000-image outputs folder.
DEFAULT_MAX_COUNT = 64
CORESET_MODES = ("published", "diverse")  # the node's / CLI's names for diverse=False / True


def _normalized(embeddings: torch.Tensor) -> torch.Tensor:
    if embeddings.dim() != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"coreset embeddings must be a non-empty [N, D] matrix, got {list(embeddings.shape)}")
    if not torch.isfinite(embeddings).all():
        bad = (~torch.isfinite(embeddings)).any(1).nonzero()[0, 0].item()
        raise ValueError(f"coreset embeddings contain NaN/inf (row {bad})")
    e = embeddings.float() if embeddings.dtype not in (torch.float32, torch.float64) else embeddings
    return torch.nn.functional.normalize(e, dim=1)


def sample_count(total: int, ratio: float = RATIO, n: int | None = None, max_count: int = 0) -> int:
    """How many prompts to pick: n if given, else max(1, round(ratio * total)); at most `max_count`
    (0 = no limit: the node's `max_count` and the CLI's `--max-count`) and never more than total."""
    if n is None:
        if not 0 < ratio <= 1:
            raise ValueError(f"coreset ratio must lie in (0, 1], got {ratio}")
        n = max(1, round(ratio * total))
    if n < 1:
        raise ValueError(f"coreset size must be >= 1, got {n}")
    if max_count < 0:
        raise ValueError(f"the coreset's maximum count must be >= 0 (0 = no limit), got {max_count}")
    return min(n, total, max_count or total)


def coreset_sample(
    embeddings: torch.Tensor,
    intensities: Sequence[float] | torch.Tensor | None = None,
    ratio: float = RATIO,
    n: int | None = None,
    k: int = K,
    seed: int = SEED,
    diverse: bool = False,
    block: int = 64,
) -> torch.Tensor:
    """Pick representative prompts. embeddings [N, D] (pooled CLIP features), intensities [N] (p_i).

    Returns a LongTensor [n] of indices in pick order. `n` overrides `ratio`; `k >= N`
    uses the whole history as the approximation set A; deterministic for a seed.
    diverse=False is Algorithm 1 (mode "published"). diverse=True (mode "diverse") makes the
    same first pick (the most typical prompt), then farthest-first: each next pick maximises
    p_i * (1 - cos) to the nearest pick so far, so minor themes are covered.
    """
    e = _normalized(embeddings)
    total = e.shape[0]
    p = check_intensities(intensities, total, "coreset intensities", e.dtype)
    count = sample_count(total, ratio, n)
    if k < 1:
        raise ValueError(f"coreset k must be >= 1, got {k}")
    if k >= total:
        anchors = torch.arange(total)
    else:
        anchors = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]
    scale = SIM_SCALE * p  # [N]; sim(e_s, e_i, p_i) = (e_i . e_s) * scale_i
    score = (e @ e[anchors].mean(0)) * scale  # mean over a of sim(a, e_i, p_i)
    if diverse:  # k-center on cosine distance: maximise the p-weighted distance to the nearest pick
        row = lambda rows: (1 - rows) * p  # noqa: E731
    else:
        row = lambda rows: rows * scale  # noqa: E731
    picks: list[int] = []
    rows: dict[int, torch.Tensor] = {}  # candidate index -> its similarity row [N]
    for _ in range(count):
        best = int(torch.argmax(score))  # first maximal value: ties -> lowest index
        if best not in rows:
            candidates = torch.topk(score, min(block, total - len(picks))).indices
            if best not in candidates.tolist():
                candidates = torch.cat([torch.tensor([best]), candidates[:-1]])
            if len(rows) > 8 * block:  # bound memory: stale rows are still exact, just many
                rows.clear()
            new = [c for c in candidates.tolist() if c not in rows]
            block_rows = row(e[new] @ e.T)  # [len(new), N]
            rows.update(zip(new, block_rows.unbind(0)))
        if diverse and not picks:  # after the first pick, the score is the distance to the picks
            score = rows.pop(best).clone()
        else:
            torch.minimum(score, rows.pop(best), out=score)
        score[best] = -torch.inf
        picks.append(best)
    return torch.tensor(picks, dtype=torch.long)
