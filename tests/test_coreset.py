"""Coreset sampling against a literal float64 restatement of Algorithm 1 (docs/method.md §4)."""

import json
import math

import pytest
import torch

from drum_core import coreset_sample
from drum_core.cli import build_parser, main
from drum_core.coreset import CORESET_MODES, sample_count


def naive_algorithm_1(embeddings, intensities, n, anchors):
    """Algorithm 1 written out with Python loops over prompts, float64."""
    e = embeddings.double()
    total = e.shape[0]

    def sim(a, i):
        return 100.0 * float(torch.dot(e[a], e[i]) / (e[a].norm() * e[i].norm())) * float(intensities[i])

    score = [sum(sim(a, i) for a in anchors) / len(anchors) for i in range(total)]
    picks = []
    for _ in range(n):
        best = max(range(total), key=lambda i: (score[i], -i))  # ties -> lowest index
        picks.append(best)
        score = [min(score[i], sim(best, i)) for i in range(total)]
        score[best] = -math.inf
    return picks


def naive_diverse(embeddings, intensities, n, anchors):
    """The diverse mode written out, float64: Algorithm 1's first pick, then farthest-first on p_i * (1 - cos)."""
    e = embeddings.double()
    total = e.shape[0]

    def cos(a, i):
        return float(torch.dot(e[a], e[i]) / (e[a].norm() * e[i].norm()))

    score = [sum(100.0 * cos(a, i) * float(intensities[i]) for a in anchors) / len(anchors) for i in range(total)]
    picks = []
    for step in range(n):
        best = max(range(total), key=lambda i: (score[i], -i))  # ties -> lowest index
        picks.append(best)
        distance = [float(intensities[i]) * (1.0 - cos(best, i)) for i in range(total)]
        score = distance if step == 0 else [min(score[i], distance[i]) for i in range(total)]
        score[best] = -math.inf
    return picks


def anchors_for(total, k, seed):
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k].tolist() if k < total else list(range(total))


@pytest.mark.parametrize("diverse, naive", [(False, naive_algorithm_1), (True, naive_diverse)], ids=["published", "diverse"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [3, 10, 1000])
def test_matches_naive_restatement(diverse, naive, weighted, k):
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(4, 16, generator=g, dtype=torch.float64)
    emb = centers[torch.randint(0, 4, (120,), generator=g)] + 0.7 * torch.randn(120, 16, generator=g, dtype=torch.float64)
    intensities = torch.rand(120, generator=g, dtype=torch.float64) * 2 if weighted else torch.ones(120, dtype=torch.float64)
    picks = coreset_sample(emb, intensities if weighted else None, n=25, k=k, seed=5, diverse=diverse, block=4)
    assert picks.tolist() == naive(emb, intensities, 25, anchors_for(120, k, 5))
    assert picks[0] == coreset_sample(emb, intensities if weighted else None, n=1, k=k, seed=5)[0]  # both modes: the same first pick


def test_invariants_unique_greedy_seeded():
    emb = torch.randn(500, 32, generator=torch.Generator().manual_seed(0))
    picks = coreset_sample(emb, ratio=0.1)
    assert picks.dtype == torch.long and len(picks) == 50 and len(set(picks.tolist())) == 50
    assert torch.equal(picks, coreset_sample(emb, ratio=0.1))  # deterministic for a seed
    assert not torch.equal(picks, coreset_sample(emb, ratio=0.1, seed=1))
    assert torch.equal(coreset_sample(emb, n=20), picks[:20])  # greedy: a prefix of a longer run
    assert len(coreset_sample(emb, n=10_000)) == 500  # never more than N
    assert len(coreset_sample(emb[:3], ratio=0.1)) == 1  # n = max(1, round(ratio * N))


@pytest.mark.parametrize(
    ("total", "ratio", "expected"), [(17, 0.1, 2), (36, 0.1, 4), (5, 0.3, 2), (640, 0.1, 64), (14, 0.1, 1), (3, 0.1, 1)]
)
def test_sample_count_rounds_to_the_nearest_whole_number(total, ratio, expected):
    """n = max(1, round(ratio * N)): 1.7 -> 2, 3.6 -> 4, 1.5 -> 2 (truncating would give 1, 3, 1), 1.4 -> 1, 0.3 -> 1."""
    assert sample_count(total, ratio) == expected
    emb = torch.randn(total, 8, generator=torch.Generator().manual_seed(total))
    assert len(coreset_sample(emb, ratio=ratio)) == expected


def test_weights_steer_the_picks():
    g = torch.Generator().manual_seed(1)
    emb = 4 * torch.randn(1, 24, generator=g) + torch.randn(300, 24, generator=g)  # CLIP-like: all cosines > 0
    intensities = torch.ones(300)
    intensities[:150] = 0.01  # the first half barely liked
    picks = coreset_sample(emb, intensities, n=30)
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


def test_diverse_mode_by_hand():
    # unit vectors at 0, 10, 20, 90 and 100 degrees, all anchors: the published first pick is 20 degrees
    # (largest mean cosine), then the farthest (100 degrees: 1 - cos 80), then 0 degrees (1 - cos 20 to 20).
    angles = torch.tensor([0.0, 10.0, 20.0, 90.0, 100.0], dtype=torch.float64) * math.pi / 180
    emb = torch.stack([angles.cos(), angles.sin()], 1)
    assert coreset_sample(emb, n=3, k=5).tolist() == [2, 1, 0]  # published: the central cluster
    assert coreset_sample(emb, n=3, k=5, diverse=True).tolist() == [2, 4, 0]
    # p = 0.2 on the 100-degree prompt: 0.2 * (1 - cos 80) = 0.165 loses to 1 - cos 70 = 0.658 (90 degrees)
    assert coreset_sample(emb, [1, 1, 1, 1, 0.2], n=2, k=5, diverse=True).tolist() == [2, 3]


def test_diverse_mode_covers_minor_themes_the_published_rule_leaves_out():
    g = torch.Generator().manual_seed(7)
    shared, themes = torch.randn(16, generator=g), torch.randn(3, 16, generator=g)
    theme = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    emb = 3 * shared + 2 * themes[theme] + 0.5 * torch.randn(100, 16, generator=g)
    assert set(theme[coreset_sample(emb, n=10)].tolist()) == {0}
    assert set(theme[coreset_sample(emb, n=10, diverse=True)].tolist()) == {0, 1, 2}


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


def one_row_per_step(embeddings, intensities, n, anchors):
    """Algorithm 1 as the release loops: one full similarity row per pick, float64, vectorized over prompts."""
    e = torch.nn.functional.normalize(embeddings.double(), dim=1)
    p = intensities.double()
    score = 100.0 * (e @ e[anchors].T).mean(1) * p
    picks = []
    for _ in range(n):
        best = int(torch.argmax(score))  # first maximum: ties -> lowest index
        picks.append(best)
        score = torch.minimum(score, 100.0 * (e @ e[best]) * p)
        score[best] = -math.inf
    return picks


def test_hundred_thousand_prompts_are_routine():
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(100_000, 64, generator=g, dtype=torch.float64)
    intensities = 0.5 + torch.rand(100_000, generator=g, dtype=torch.float64)
    picks = coreset_sample(emb, intensities, n=100, k=10, seed=42).tolist()
    assert picks == one_row_per_step(emb, intensities, 100, anchors_for(100_000, 10, 42))


def test_cli_coreset_mode_and_half_life(tmp_path, capsys):
    history = tmp_path / "dated.csv"
    history.write_text(
        "prompt,rating,date\na watercolor fox,4,2024-05-08\na watercolor owl,4,2024-05-01\n"
        "an oil painting of a storm,2,2024-04-10\na charcoal portrait,3,2024-05-08\n"
    )
    argv = ["profile", "--tiny-random", "--history", str(history), "--ratio", "1", "--json", "--no-progress"]
    reports = {}
    for extra in ([], ["--half-life-days", "7", "--coreset-mode", "diverse"]):
        assert main([*argv, *extra]) == 0
        reports[len(extra)] = json.loads(capsys.readouterr().out)
    plain, tuned = reports[0], reports[4]
    assert plain["mode"] == "published" and tuned["mode"] == "diverse"
    assert {p["index"]: p["intensity"] for p in plain["picked"]} == {0: 4.0, 1: 4.0, 2: 2.0, 3: 3.0}
    assert {p["index"]: p["intensity"] for p in tuned["picked"]} == {0: 4.0, 1: 2.0, 2: 2.0 * 0.5**4, 3: 3.0}  # ages 0, 7, 28, 0 days
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--half-life-days", "-1"])
    assert refused.value.code == 2 and "--half-life-days" in capsys.readouterr().err
    choices = next(a.choices for a in build_parser()._subparsers._group_actions[0].choices["profile"]._actions if a.dest == "coreset_mode")
    assert tuple(choices) == CORESET_MODES
