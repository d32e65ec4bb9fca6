"""Coreset sampling against a literal float64 restatement of Algorithm 1 (method.md §4)."""

import math

import pytest
import torch

from drum_core import coreset_sample


def naive_algorithm_1(embeddings, weights, n, anchors):
    """Algorithm 1 written out with Python loops over prompts, float64."""
    e = embeddings.double()
    total = e.shape[0]

    def sim(a, i):
        return 100.0 * float(torch.dot(e[a], e[i]) / (e[a].norm() * e[i].norm())) * float(weights[i])

    score = [sum(sim(a, i) for a in anchors) / len(anchors) for i in range(total)]
    picks = []
    for _ in range(n):
        best = max(range(total), key=lambda i: (score[i], -i))  # ties -> lowest index
        picks.append(best)
        score = [min(score[i], sim(best, i)) for i in range(total)]
        score[best] = -math.inf
    return picks


def anchors_for(total, k, seed):
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k].tolist() if k < total else list(range(total))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [3, 10, 1000])
def test_matches_naive_algorithm(weighted, k):
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(4, 16, generator=g, dtype=torch.float64)
    emb = centers[torch.randint(0, 4, (120,), generator=g)] + 0.7 * torch.randn(120, 16, generator=g, dtype=torch.float64)
    weights = torch.rand(120, generator=g, dtype=torch.float64) * 2 if weighted else torch.ones(120, dtype=torch.float64)
    picks = coreset_sample(emb, weights if weighted else None, n=25, k=k, seed=5, block=4)
    assert picks.tolist() == naive_algorithm_1(emb, weights, 25, anchors_for(120, k, 5))


def test_invariants_unique_greedy_seeded():
    emb = torch.randn(500, 32, generator=torch.Generator().manual_seed(0))
    picks = coreset_sample(emb, ratio=0.1)
    assert picks.dtype == torch.long and len(picks) == 50 and len(set(picks.tolist())) == 50
    assert torch.equal(picks, coreset_sample(emb, ratio=0.1))  # deterministic for a seed
    assert not torch.equal(picks, coreset_sample(emb, ratio=0.1, seed=1))
    assert torch.equal(coreset_sample(emb, n=20), picks[:20])  # greedy: a prefix of a longer run
    assert len(coreset_sample(emb, n=10_000)) == 500  # never more than N
    assert len(coreset_sample(emb[:3], ratio=0.1)) == 1  # n = max(1, round(ratio * N))


def test_weights_steer_the_picks():
    g = torch.Generator().manual_seed(1)
    emb = 4 * torch.randn(1, 24, generator=g) + torch.randn(300, 24, generator=g)  # CLIP-like: all cosines > 0
    weights = torch.ones(300)
    weights[:150] = 0.01  # the first half barely liked
    picks = coreset_sample(emb, weights, n=30)
    assert (picks >= 150).float().mean() > 0.9
    zero = torch.ones(300)
    zero[7] = 0
    assert 7 not in coreset_sample(emb, zero, n=299).tolist()[:-1]  # a p=0 prompt scores 0, picked last


def test_published_rule_favours_central_prompts_and_diverse_variant_spreads():
    g = torch.Generator().manual_seed(2)
    main_theme = torch.randn(1, 16, generator=g) * 3 + 0.3 * torch.randn(90, 16, generator=g)
    outliers = torch.randn(10, 16, generator=g) * 3
    emb = torch.cat([main_theme, outliers])
    assert all(i < 90 for i in coreset_sample(emb, n=5).tolist())
    assert any(i >= 90 for i in coreset_sample(emb, n=5, diverse=True).tolist())


def test_bad_inputs_are_named():
    emb = torch.randn(10, 4)
    with pytest.raises(ValueError, match="index 3"):
        coreset_sample(emb, [1, 1, 1, float("nan")] + [1] * 6)
    with pytest.raises(ValueError, match="index 0"):
        coreset_sample(emb, [-1] + [1] * 9)
    with pytest.raises(ValueError, match="9 preference intensities for 10"):
        coreset_sample(emb, [1] * 9)
    with pytest.raises(ValueError, match="non-empty"):
        coreset_sample(torch.zeros(0, 4))
    bad = emb.clone()
    bad[4, 1] = float("inf")
    with pytest.raises(ValueError, match="row 4"):
        coreset_sample(bad)
    with pytest.raises(ValueError, match="ratio"):
        coreset_sample(emb, ratio=0)


def test_hundred_thousand_prompts_are_routine():
    emb = torch.randn(100_000, 64, generator=torch.Generator().manual_seed(4))
    picks = coreset_sample(emb, n=100)
    assert len(set(picks.tolist())) == 100
