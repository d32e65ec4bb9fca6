"""diffusers pipelines personalized end to end, and adapter weights from folders / the hub.

Tiny random pipelines of all five families (drum_core.tiny): with an empty history the
kwargs must equal the pipeline's own `encode_prompt`; with a history they carry the
personalized condition in the shapes each pipeline takes, and the pipeline renders it.
"""

import functools

import numpy as np
import pytest
import torch
from support.method_table import expected_condition

from drum_core import EmbeddingCache, coreset_sample, tiny
from drum_core.adapter_names import ENCODER_ADAPTERS, PUBLISHED_SIZES
from drum_core.diffusers_pipelines import (
    PipelinePersonalizer,
    encoder_names,
    folder_encoder_names,
    personalize_pipeline,
    pipeline_encoder_names,
    profile_history,
)
from drum_core.history import History
from drum_core.peca import PeCA, PeCAConfig, PeCAFormatError
from drum_core.personalizer import AdapterMismatchError
from drum_core.weights import HUB_PAGE, AdapterNotFoundError, find_adapter, load_adapters

TARGET = "a fox in the snow"
HISTORY = History(list(tiny.HISTORY), [1.0, 2.0, 0.5] * 4)
SHAPES = {  # family: (prompt_embeds, pooled_prompt_embeds) for one degree
    "sd1": ((1, 77, tiny.L_WIDTH), None),
    "sd2": ((1, 77, tiny.H_WIDTH), None),
    "sdxl": ((1, 77, tiny.L_WIDTH + tiny.G_WIDTH), (1, tiny.PROJECTION_WIDTH)),
    "sd3": ((1, 77 + 256, 4096), (1, 2 * tiny.PROJECTION_WIDTH)),
    "flux": ((1, 256, 4096), (1, tiny.L_WIDTH)),
}


@functools.cache
def tiny_pipe(family):
    """One tiny pipeline per family for the whole module (personalizing never changes it)."""
    return tiny.pipeline(family)


@pytest.fixture(scope="module", params=tiny.FAMILIES)
def family_pipe(request):
    return request.param, tiny_pipe(request.param), tiny.adapters(request.param)


def own_encoding(family, pipe, prompt, clip_skip=None):
    """The pipeline's own encode_prompt, as the kwargs personalize_pipeline returns."""
    with torch.inference_mode():
        if family in ("sd1", "sd2"):
            positive, negative = pipe.encode_prompt(prompt, "cpu", 1, True)
            return {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        if family == "flux":
            positive, pooled, _ = pipe.encode_prompt(prompt, device="cpu", max_sequence_length=256)
            return {"prompt_embeds": positive, "pooled_prompt_embeds": pooled}
        extra = {"prompt_3": None, "max_sequence_length": 256} if family == "sd3" else {}
        out = pipe.encode_prompt(prompt, prompt_2=None, device="cpu", do_classifier_free_guidance=True, clip_skip=clip_skip, **extra)
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    return dict(zip(names, out))


def test_empty_history_reproduces_the_pipelines_own_encoding(family_pipe):
    family, pipe, adapters = family_pipe
    kwargs = personalize_pipeline(pipe, History([]), TARGET, adapters=adapters)
    expected = own_encoding(family, pipe, TARGET)
    assert kwargs.keys() == expected.keys()
    for key in kwargs:
        torch.testing.assert_close(kwargs[key], expected[key], msg=f"{family} {key}")


def test_personalized_kwargs_have_the_pipeline_shapes(family_pipe):
    family, pipe, adapters = family_pipe
    session = PipelinePersonalizer(pipe, adapters)
    profile = session.set_history(HISTORY, ratio=0.25)
    assert session.family == family and len(profile.indices) == 3
    kwargs = session.kwargs(TARGET, [0.0, 0.3])
    tokens, pooled = SHAPES[family]
    assert kwargs["prompt_embeds"].shape == (2, *tokens[1:])
    if pooled is None:
        assert "pooled_prompt_embeds" not in kwargs
    else:
        assert kwargs["pooled_prompt_embeds"].shape == (2, *pooled[1:])
    if family != "flux":  # FLUX is guidance-distilled: no negative prompt
        assert kwargs["negative_prompt_embeds"].shape == kwargs["prompt_embeds"].shape
    own = own_encoding(family, pipe, TARGET)
    rows = kwargs["prompt_embeds"]
    assert not torch.allclose(rows[0], rows[1]) and not torch.allclose(rows[1], own["prompt_embeds"][0])
    by_encoder = {name: adapters[ENCODER_ADAPTERS[name]] for name in session.backends}
    for row, degree in enumerate((0.0, 0.3)):  # each row = docs/method.md §5 by hand on the picked references
        tokens, pooled = expected_condition(family, session.backends, by_encoder, degree, TARGET, profile.prompts, profile.intensities)
        torch.testing.assert_close(rows[row : row + 1], tokens, rtol=1e-4, atol=1e-5)
        if pooled is not None and "pooled_prompt_embeds" in kwargs:
            torch.testing.assert_close(kwargs["pooled_prompt_embeds"][row : row + 1], pooled, rtol=1e-4, atol=1e-5)
    for key in ("negative_prompt_embeds", "negative_pooled_prompt_embeds"):  # the empty negative prompt, as diffusers encodes it
        if key in own:
            torch.testing.assert_close(kwargs[key], own[key].expand_as(kwargs[key]))


@pytest.mark.parametrize("family", ["sd1", "sdxl", "flux"])
def test_a_personalized_image_end_to_end(family):
    pipe = tiny_pipe(family)
    kwargs = personalize_pipeline(pipe, HISTORY, TARGET, degree=[0.0, 1.0], adapters=tiny.adapters(family), ratio=0.25)
    images = pipe(**kwargs, num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)
    first, second = (np.asarray(image, dtype=np.float32) for image in images)
    for pixels in (first, second):  # noise from random weights, but never blank: a black or flat image fails
        assert pixels.std() > 5 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 64
    assert np.abs(first - second).mean() > 1.0  # alpha 1 (all history) moved the image by more than rounding


def test_sd3_without_t5_is_still_sd3_and_matches_diffusers():
    full = tiny_pipe("sd3")
    components = {**full.components, "text_encoder_3": None, "tokenizer_3": None}
    pipe = type(full)(**components)
    adapters = tiny.adapters("sd3")
    plain = personalize_pipeline(pipe, History([]), TARGET, adapters=adapters)
    expected = own_encoding("sd3", pipe, TARGET)
    for key in expected:
        torch.testing.assert_close(plain[key], expected[key], msg=key)
    personalized = personalize_pipeline(pipe, HISTORY, TARGET, adapters=adapters)
    assert personalized["prompt_embeds"].shape == (1, 77 + 256, 4096)


def test_clip_skip_follows_diffusers():
    pipe = tiny_pipe("sdxl")
    kwargs = personalize_pipeline(pipe, History([]), TARGET, adapters=tiny.adapters("sdxl"), clip_skip=1)
    torch.testing.assert_close(kwargs["prompt_embeds"], own_encoding("sdxl", pipe, TARGET, clip_skip=1)["prompt_embeds"])


def test_profile_is_the_coreset_of_the_first_clip_features():
    pipe = tiny_pipe("sd3")
    session = PipelinePersonalizer(pipe, tiny.adapters("sd3"))
    profile = session.set_history(HISTORY, ratio=0.5, max_count=4, k=5, seed=7)
    features = EmbeddingCache().pooled_features(session.backends["l"], HISTORY.prompts)
    assert profile.indices == coreset_sample(features, HISTORY.intensities, n=4, k=5, seed=7).tolist()
    assert profile.prompts == [HISTORY.prompts[i] for i in profile.indices]
    assert profile.intensities == [HISTORY.intensities[i] for i in profile.indices]
    assert profile.as_dict()["picked"][0] == {
        "rank": 1,
        "index": profile.indices[0],
        "intensity": profile.intensities[0],
        "prompt": profile.prompts[0],
    }
    assert profile_history(session.backends["l"], History([])).indices == []


def test_family_comes_from_encoder_configs_not_names(tmp_path):
    clip = {"model_type": "clip_text_model"}
    assert encoder_names({"text_encoder": {**clip, "hidden_size": 768, "hidden_act": "quick_gelu"}}) == {"l": "text_encoder"}
    assert encoder_names({"text_encoder": {**clip, "hidden_size": 1024, "hidden_act": "gelu"}}) == {"h": "text_encoder"}
    assert encoder_names({"text_encoder": {**clip, "hidden_size": 768, "hidden_act": "gelu"}}) == {"l": "text_encoder"}
    flux = {"text_encoder": {**clip, "hidden_size": 768}, "text_encoder_2": {"model_type": "t5"}}
    assert encoder_names(flux) == {"l": "text_encoder", "t5": "text_encoder_2"}
    with pytest.raises(ValueError, match="text_encoder_3: a 'bert' text encoder is not supported"):
        encoder_names({"text_encoder": clip, "text_encoder_3": {"model_type": "bert"}})
    for family in ("sd2", "sdxl"):
        pipe = tiny_pipe(family)
        pipe.save_pretrained(tmp_path / family)
        assert folder_encoder_names(tmp_path / family) == pipeline_encoder_names(pipe)


def test_adapters_by_encoder_name_or_folder_and_missing_ones_named(tmp_path):
    pipe = tiny_pipe("sdxl")
    adapters = tiny.adapters("sdxl")
    by_name = personalize_pipeline(pipe, HISTORY, TARGET, adapters=adapters)
    by_encoder = personalize_pipeline(pipe, HISTORY, TARGET, adapters={"l": adapters["L"], "g": adapters["bigG"]})
    for name, adapter in adapters.items():
        adapter.save(tmp_path / f"{name}.safetensors")
    from_folder = personalize_pipeline(pipe, HISTORY, TARGET, adapters=tmp_path)
    for key in by_name:
        torch.testing.assert_close(by_encoder[key], by_name[key])
        torch.testing.assert_close(from_folder[key], by_name[key])
    with pytest.raises(AdapterMismatchError, match=r"text encoder 'g' \(expected the bigG adapter, bigG.safetensors\)"):
        personalize_pipeline(pipe, HISTORY, TARGET, adapters={"L": adapters["L"]})


# ---------------------------------------------------------------------------------- weights
def small(name: str) -> PeCA:
    """One block with the published widths of `name`: the published layout, small enough for a test."""
    return PeCA(PeCAConfig.for_encoder(*PUBLISHED_SIZES[name], layers=1))


def test_adapters_from_a_folder_or_the_hub_layout(tmp_path, offline):
    flat, hub = tmp_path / "flat", tmp_path / "hub" / "weight"
    flat.mkdir()
    hub.mkdir(parents=True)
    small("L").save(flat / "L.safetensors")
    small("H").save(hub / "H.safetensors")
    assert find_adapter("L", [flat]) == flat / "L.safetensors"
    assert find_adapter("H", [flat, tmp_path / "hub"]) == hub / "H.safetensors"
    loaded = load_adapters(["L"], flat)
    assert loaded["L"].config == small("L").config and loaded["L"].source == str(flat / "L.safetensors")


def test_drum_weights_variable_is_searched(tmp_path, offline, monkeypatch):
    small("L").save(tmp_path / "L.safetensors")
    monkeypatch.setenv("DRUM_WEIGHTS", f"{tmp_path / 'nowhere'}{__import__('os').pathsep}{tmp_path}")
    assert find_adapter("L") == tmp_path / "L.safetensors"


def test_offline_and_missing_says_what_to_download_and_where(tmp_path, offline):
    with pytest.raises(AdapterNotFoundError) as caught:
        load_adapters(["L", "T5"], tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError) and caught.value.names == ["L", "T5"]
    for expected in ("L.safetensors, T5.safetensors", HUB_PAGE, str(tmp_path), "DRUM_WEIGHTS", "models/drum", "HF_HUB_OFFLINE is set"):
        assert expected in message


def test_a_file_holding_another_adapter_is_refused(tmp_path, offline):
    small("L").save(tmp_path / "H.safetensors")
    with pytest.raises(PeCAFormatError, match=r"H.safetensors: this file holds the L adapter, not H"):
        load_adapters(["H"], tmp_path)
    with pytest.raises(ValueError, match="unknown DrUM adapter 'G'"):
        find_adapter("G", [tmp_path])
