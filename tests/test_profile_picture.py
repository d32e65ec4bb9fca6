"""drum_core.profile_picture: the profile picture (PIL only)."""

import numpy as np
import pytest
import torch

from drum_core.profile_picture import PICK_DOT, project_2d, render_profile


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
