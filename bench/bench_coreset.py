"""What each coreset mode keeps of a multi-theme history: picks per theme and two quality measures.

    python bench/bench_coreset.py

Synthetic pooled features [2,000, 768] shaped like CLIP text features: every prompt shares one
direction (so unrelated prompts still have cosine ~0.5, as CLIP's do), plus its theme's direction,
plus noise (cosine ~0.8 inside a theme). Themes A / B / C hold 1,400 / 400 / 200 prompts. The
coreset keeps 200 (ratio 0.1, k 10, seed 42) with intensities: all 1; ratings 1-5 drawn uniformly;
ratings 1-5 with theme C's tripled. Printed as a markdown table:

- picks A / B / C: how many picks fall in each theme;
- history score: the paper's metric (equation 3) for the picks, mean over picks s of
  sum_i p_i * 100 * cos(e_s, e_i) / sum_i p_i — how typical of the whole history the picks are;
- coverage: sum_i p_i * 100 * max_s cos(e_i, e_s) / sum_i p_i — how close every prompt of the
  history is to its nearest pick (a theme without picks pulls it down).

Everything is seeded: the table is the same on every run (coreset speed is in bench_peca.py).
"""

from __future__ import annotations

import torch

from drum_core.coreset import CORESET_MODES, coreset_sample

THEMES = {"A": 1400, "B": 400, "C": 200}
DIM, PICKS = 768, 200
SHARED, THEME, NOISE = 1.0, 0.8, 0.6  # lengths of the shared, theme and noise parts of a feature


def themed_features(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, DIM] float64, theme index [N]) of the synthetic history."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(1 + len(THEMES), DIM, generator=g, dtype=torch.float64), dim=1)
    theme = torch.cat([torch.full((count,), t) for t, count in enumerate(THEMES.values())])
    noise = torch.randn(len(theme), DIM, generator=g, dtype=torch.float64) * NOISE / DIM**0.5
    return SHARED * directions[0] + THEME * directions[1 + theme] + noise, theme


def intensity_cases(theme: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    """The intensity settings compared, each [N] float64."""
    ratings = torch.randint(1, 6, (len(theme),), generator=torch.Generator().manual_seed(seed)).double()
    return {
        "all 1": torch.ones(len(theme), dtype=torch.float64),
        "ratings 1-5": ratings,
        "ratings 1-5, theme C x3": torch.where(theme == 2, 3 * ratings, ratings),
    }


def scores(cosines: torch.Tensor, picks: torch.Tensor, intensities: torch.Tensor) -> tuple[float, float]:
    """(history score, coverage) of the picks; cosines [N, N], intensities [N]."""
    history = (100 * cosines[picks] @ intensities / intensities.sum()).mean()
    coverage = 100 * (cosines[:, picks].max(1).values * intensities).sum() / intensities.sum()
    return float(history), float(coverage)


def main() -> None:
    features, theme = themed_features()
    unit = torch.nn.functional.normalize(features, dim=1)
    cosines = unit @ unit.T
    same = theme[:, None] == theme[None, :]
    print(f"{len(theme):,} prompts, themes {' / '.join(f'{n} {c:,}' for n, c in THEMES.items())}, {PICKS} picks")
    print(f"mean cosine inside a theme {cosines[same].mean():.2f}, across themes {cosines[~same].mean():.2f}\n")
    print("| intensities | mode | picks A / B / C | history score (eq. 3) | coverage |")
    print("|---|---|---|---:|---:|")
    for case, intensities in intensity_cases(theme).items():
        for mode in CORESET_MODES:
            picks = coreset_sample(features, intensities, n=PICKS, diverse=mode == "diverse")
            counts = torch.bincount(theme[picks], minlength=len(THEMES)).tolist()
            history, coverage = scores(cosines, picks, intensities)
            print(f"| {case} | {mode} | {' / '.join(map(str, counts))} | {history:.2f} | {coverage:.2f} |")


if __name__ == "__main__":
    main()
