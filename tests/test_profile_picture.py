"""drum_core.profile_picture: the profile picture (PIL only)."""

import numpy as np
import pytest
import torch

from drum_core.profile_picture import PICK_DOT, legend, place_labels, project_2d, render_profile


def test_project_2d_keeps_the_main_directions():
    generator = torch.Generator().manual_seed(0)
    clusters = torch.cat([torch.randn(10, 16, generator=generator) * 0.01 + c for c in torch.eye(16)[:2] * 5])
    coords = project_2d(clusters)
    assert coords.shape == (20, 2)
    gap = (coords[:10].mean(0) - coords[10:].mean(0)).norm()
    assert gap > 10 * coords[:10].std(0).norm()  # the two clusters land far apart
    assert torch.equal(project_2d(torch.ones(1, 4)), torch.zeros(1, 2, dtype=torch.float64))


def test_render_profile_draws_the_map_and_the_picks():
    embeddings = torch.randn(30, 8, generator=torch.Generator().manual_seed(1))
    prompts = [f"prompt {i}" for i in range(30)]
    image = render_profile(embeddings, [3, 7, 11], prompts, [1.0 + i % 3 for i in range(30)], size=(640, 320))
    assert image.size == (640, 320) and image.mode == "RGB"
    pixels = np.asarray(image).reshape(-1, 3)
    assert (pixels == PICK_DOT).all(1).sum() > 20  # the picks are drawn
    assert len(np.unique(pixels, axis=0)) > 5


def test_render_profile_names_bad_inputs():
    embeddings = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="2 prompts for 3 embeddings"):
        render_profile(embeddings, [], ["a", "b"])
    with pytest.raises(ValueError, match=r"picked indices \[5\] out of range"):
        render_profile(embeddings, [5], ["a", "b", "c"])
    with pytest.raises(ValueError, match="non-empty"):
        render_profile(torch.zeros(0, 4), [], [])


def test_legend_lists_what_fits_and_says_how_many_more():
    prompts = [f"prompt {i}" for i in range(30)]
    intensities = [1.0 + i % 5 for i in range(30)]
    picks = list(range(18))
    lines = legend(30, picks, prompts, intensities, rows=16)
    assert len(lines) == 16 and lines[-1] == f"+{18 - 13} more"
    assert lines[2] == " 1. weight 1: prompt 0" and lines[14] == "13. weight 3: prompt 12"
    assert legend(30, picks[:3], prompts, intensities, rows=16)[-1] == " 3. weight 3: prompt 2"  # all fit: no "+N more"
    words = " ".join(lines)
    assert "PCA" not in words and "p=" not in words and "intensity" not in words


def test_rank_labels_never_overlap():
    anchors = [(100.0 + (i % 3), 100.0 + (i % 2)) for i in range(12)]  # picks piled on one spot
    corners = place_labels(anchors, (10.0, 14.0))
    boxes = [c for c in corners if c is not None]
    assert len(boxes) == 4 and corners[:4] == boxes  # the four sides of the first dots; the rest stay unnumbered
    for k, (x, y) in enumerate(boxes):
        for u, v in boxes[k + 1 :]:
            assert x >= u + 10 or u >= x + 10 or y >= v + 14 or v >= y + 14
    assert place_labels([(0.0, 0.0), (100.0, 100.0)], (10.0, 14.0)) == [(6, -16.0), (106.0, 84.0)]


def test_the_degree_alpha_opens_the_legend_and_changes_the_picture():
    prompts = [f"prompt {i}" for i in range(6)]
    intensities = [1.0] * 6
    assert legend(6, [0], prompts, intensities, rows=8, degrees=[0.3])[0].startswith("Taste at degree 0.3 · 6 prompts")
    assert legend(6, [0], prompts, intensities, rows=8, degrees=[0.0, 0.45, 0.9])[0].startswith("Taste at degrees 0, 0.45, 0.9 · ")
    assert legend(6, [0], prompts, intensities, rows=8)[0].startswith("6 prompts")  # no degree given: none named
    embeddings = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    plain = np.asarray(render_profile(embeddings, [0], prompts, intensities, size=(640, 320)))
    named = np.asarray(render_profile(embeddings, [0], prompts, intensities, size=(640, 320), degrees=[0.3]))
    assert not np.array_equal(plain, named)
    assert np.array_equal(plain[:, :300], named[:, :300])  # the map itself is the same; only the legend says the degree
