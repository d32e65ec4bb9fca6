"""Per-family assembly (docs/method.md §5) on real tiny transformers encoders and PeCA adapters.

Each expectation is written straight from the table in docs/method.md §5, calling the adapters
and encoders by hand; the Personalizer must produce exactly the same tensors.
"""

import pytest
import torch
import torch.nn.functional as F
from support.method_table import by_hand, expected_condition

from drum_core import AdapterMismatchError, EmbeddingCache, Personalizer, detect_family, tiny
from drum_core.diffusers_pipelines import pipeline_encoders
from drum_core.personalizer import ENCODER_ADAPTERS, FAMILIES, T5Conventions, UnsupportedFamilyError, t5_length

HISTORY = tiny.HISTORY[:4]
INTENSITIES = [1.0, 2.0, 0.5, 1.5]
TARGET = "a fox in the snow"


def family_setup(family):
    """(family, {name: backend}, {name: adapter}) for a tiny random pipeline of `family`."""
    detected, encoders = pipeline_encoders(tiny.pipeline(family))
    assert detected == family
    adapters = {name: tiny.adapters(family)[ENCODER_ADAPTERS[name]] for name in encoders}
    return family, encoders, adapters


@pytest.fixture(scope="module", params=tiny.FAMILIES)
def setup(request):
    return family_setup(request.param)


@pytest.mark.parametrize("degree", [0.0, 0.3, 1.0])
def test_personalized_condition_matches_method_table(setup, degree):
    family, encoders, adapters = setup
    personalizer = Personalizer(family, encoders, adapters)
    personalizer.set_history(HISTORY, INTENSITIES)
    condition = personalizer.condition(TARGET, degree)
    tokens, pooled = expected_condition(family, encoders, adapters, degree, TARGET, HISTORY, INTENSITIES)
    torch.testing.assert_close(condition.tokens, tokens)
    torch.testing.assert_close(condition.pooled, pooled)
    shapes = {
        "sd1": (77, tiny.L_WIDTH),
        "sd2": (77, tiny.H_WIDTH),
        "sdxl": (77, tiny.L_WIDTH + tiny.G_WIDTH),
        "sd3": (77 + 256, 4096),
        "flux": (256, 4096),
    }
    assert condition.tokens.shape == (1, *shapes[family])


def test_alpha_sweep_rows_equal_single_runs(setup):
    family, encoders, adapters = setup
    personalizer = Personalizer(family, encoders, adapters)
    personalizer.set_history(HISTORY, INTENSITIES)
    sweep = personalizer.condition(TARGET, [0.0, 0.5, 1.0])
    for row, degree in enumerate([0.0, 0.5, 1.0]):
        single = personalizer.condition(TARGET, degree)
        torch.testing.assert_close(sweep.tokens[row], single.tokens[0])
        torch.testing.assert_close(sweep.pooled[row], single.pooled[0])


def test_empty_history_gives_the_plain_encoder_output(setup):
    family, encoders, adapters = setup
    personalizer = Personalizer(family, encoders, adapters)
    personalizer.set_history([])
    condition = personalizer.condition(TARGET, 0.3)
    tokens, pooled = transformers_encoding(family, encoders, TARGET)
    torch.testing.assert_close(condition.tokens, tokens)
    torch.testing.assert_close(condition.pooled, pooled)


def transformers_encoding(family, encoders, prompt):
    """(tokens, pooled) as the method table's plain rows, from transformers' own outputs and tokenizers only."""
    with torch.inference_mode():
        out = {}
        for name, encoder in encoders.items():
            length = 256 if name == "t5" else 77
            ids = encoder.tokenizer([prompt], padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
            out[name] = encoder.model(ids, output_hidden_states=True)
    if family in ("sd1", "sd2"):  # last layer after the final LayerNorm; pooler_output (no projection in these models)
        states = out["l" if family == "sd1" else "h"]
        return states.last_hidden_state, states.pooler_output
    if family == "flux":  # T5 last_hidden_state; CLIP-L pooler_output, unprojected
        return out["t5"].last_hidden_state, out["l"].pooler_output
    clip = torch.cat([out["l"].hidden_states[-2], out["g"].hidden_states[-2]], -1)  # penultimate raw states
    if family == "sdxl":
        return clip, out["g"].text_embeds
    tokens = torch.cat([F.pad(clip, (0, 4096 - clip.shape[-1])), out["t5"].last_hidden_state], 1)
    return tokens, torch.cat([out["l"].text_embeds, out["g"].text_embeds], -1)


def test_history_is_encoded_once_for_new_targets_and_alphas(setup):
    family, encoders, adapters = setup
    cache = EmbeddingCache()
    progress = []
    personalizer = Personalizer(family, encoders, adapters, cache=cache, progress=lambda done, total: progress.append((done, total)))
    personalizer.set_history(HISTORY, INTENSITIES)
    encoded = cache.computed
    assert progress[-1][0] == progress[-1][1] > 0
    personalizer.condition("another target", 0.9)
    Personalizer(family, encoders, adapters, cache=cache).set_history(HISTORY, INTENSITIES)
    assert cache.computed == encoded


def test_rebind_keeps_the_history_and_refuses_other_encoders(setup):
    family, encoders, adapters = setup
    personalizer = Personalizer(family, encoders, adapters)
    personalizer.set_history(HISTORY, INTENSITIES)
    before = personalizer.condition(TARGET, 0.3)
    personalizer.rebind(dict(encoders))
    torch.testing.assert_close(personalizer.condition(TARGET, 0.3).tokens, before.tokens)
    with pytest.raises(ValueError, match="same encoders"):
        personalizer.rebind({name: enc for name, enc in list(encoders.items())[:-1]} if len(encoders) > 1 else {})


def test_token_layer_override():
    family, encoders, adapters = family_setup("sd1")
    personalizer = Personalizer(family, encoders, adapters, token_layer=-2)
    personalizer.set_history(HISTORY, INTENSITIES)
    tokens, _ = by_hand(encoders["l"], adapters["l"], -2, 0.3, TARGET, HISTORY, INTENSITIES)
    torch.testing.assert_close(personalizer.condition(TARGET, 0.3).tokens, encoders["l"].final_norm(tokens))


def test_wrong_or_missing_adapters_are_named(setup):
    family, encoders, adapters = setup
    name = next(iter(encoders))
    with pytest.raises(AdapterMismatchError, match=f"no PeCA adapter for text encoder '{name}'"):
        Personalizer(family, encoders, {k: v for k, v in adapters.items() if k != name})
    wrong = tiny.adapter("clip", 192)
    with pytest.raises(AdapterMismatchError, match=f"width 192.*text encoder '{name}'"):
        Personalizer(family, encoders, {**adapters, name: wrong})


def test_detect_family():
    assert detect_family(["l"]) == "sd1"
    assert detect_family(["h"]) == "sd2"
    assert detect_family(["g", "l"]) == "sdxl"
    assert detect_family(["l", "g", "t5"]) == "sd3"
    assert detect_family(["g", "t5"]) == "sd3"  # SD3 without its CLIP-L, from a host that keeps no slots
    assert detect_family(["t5", "l"]) == "flux"
    assert detect_family(["l", "g", "t5", "llama"]) == "hidream"
    with pytest.raises(UnsupportedFamilyError, match="differ only in their T5 conventions"):
        detect_family(["t5"])  # PixArt/Chroma, LTX-Video and Mochi: the host must say which
    for family, conventions in (("pixart", T5Conventions(1)), ("ltxv", T5Conventions(128, None, True, True))):
        assert detect_family(["t5"], t5=conventions) == family
        assert FAMILIES[family].t5 == conventions
    assert detect_family(["t5"], t5=T5Conventions(256, None, True, True)) == "mochi"


@pytest.mark.parametrize(
    "names, stack",
    [
        (["l", "llama"], None),  # HunyuanVideo
        (["l", "qwen25_7b"], None),  # Kandinsky 5
        (["g"], None),  # an SDXL refiner's CLIP-G alone
        (["l", "g", "t5"], ["l", "g", "t5", "llama"]),  # HiDream without its Llama: not SD3
        (["l", "g"], ["l", "g", "t5", "llama"]),
        (["umt5xxl"], None),
        ([], None),
    ],
)
def test_any_other_encoder_set_is_refused_naming_it_and_the_supported_families(names, stack):
    with pytest.raises(UnsupportedFamilyError) as error:
        detect_family(names, stack=stack)
    message = str(error.value)
    assert str(sorted(names)) in message
    for spec in FAMILIES.values():
        assert f"{spec.label}: {'+'.join(sorted(spec.streams))}" in message


def test_sd3_stack_with_absent_encoders_is_sd3():
    """ComfyUI's SD3 stack keeps absent encoders as None slots: any part of it is SD3 (as before), never SDXL."""
    stack = ["l", "g", "t5"]
    for present in (["l", "g"], ["t5"], ["g", "t5"], ["l"]):
        assert detect_family(present, stack=stack) == "sd3"
    with pytest.raises(UnsupportedFamilyError):
        detect_family([], stack=stack)


@pytest.mark.parametrize(
    "family, count, expected",
    [
        ("flux", None, 256),
        ("sd3", None, 256),
        ("pixart", 12, 12),  # the prompt's own tokens, EOS included
        ("pixart", 300, 256),  # capped at the adapter's 256
        ("ltxv", 12, 128),
        ("ltxv", 200, 200),
        ("mochi", 12, 256),
        ("hidream", 12, 128),
        ("hidream", 200, 128),
    ],
)
def test_t5_length_is_the_family_own_count_capped_at_256(family, count, expected):
    assert t5_length(family, count) == expected


@pytest.mark.parametrize(
    "family, count, padding, expected",
    [  # ComfyUI's tokenizer: cut at its maximum (EOS kept), then `padding` pad tokens, then up to its minimum length
        ("pixart", 12, 1, 13),  # Chroma's workflow: T5TokenizerOptions min_padding 1
        ("ltxv", 12, 1, 128),
        ("ltxv", 127, 3, 130),
        ("hidream", 12, 200, 212),  # padding passes HiDream's 128 (ComfyUI pads a prompt's last chunk)
        ("hidream", 128, 0, 128),  # a longer prompt: its first chunk, which ComfyUI does not pad
        ("pixart", 250, 20, 256),  # capped at the adapter's 256
    ],
)
def test_t5_length_follows_the_host_min_padding(family, count, padding, expected):
    assert t5_length(family, count, padding) == expected


def test_families_declare_their_conventions():
    """docs/method.md §5 / docs/comfyui.md: what each family personalizes, pools and passes through."""
    table = {name: (set(s.encoders), s.token_encoders, s.pooled_encoders, s.passthrough) for name, s in FAMILIES.items()}
    assert table["hidream"] == ({"l", "g", "t5"}, (), ("l", "g"), ("llama",))
    for name in ("pixart", "ltxv", "mochi"):
        assert table[name] == ({"t5"}, (), (), ())
    assert FAMILIES["hidream"].t5 == T5Conventions(128, 128, True, False)  # masked T5, no mask in the conditioning
    assert [name for name, spec in FAMILIES.items() if spec.partial] == ["sd3"]


class CountedT5:
    """A T5 backend plus the host's token count (what ComfyUI's tokenizer gives; the transformers backend has none)."""

    def __init__(self, inner, count):
        self._inner, self._count = inner, count

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def token_count(self, prompt):
        return self._count


@pytest.mark.parametrize("family, count, length, masked", [("pixart", 9, 9, False), ("ltxv", 9, 128, True), ("mochi", 300, 256, True)])
def test_t5_families_cut_the_adapter_output_to_their_length(family, count, length, masked):
    """The T5 adapter's 256-token output (= FLUX's A_T5 tokens, the method table) cut to the family's length; the mask
    marks the prompt's tokens where the family's conditioning carries it."""
    _family, encoders, adapters = family_setup("flux")
    flux = Personalizer("flux", encoders, adapters)
    flux.set_history(HISTORY, INTENSITIES)
    expected = flux.condition(TARGET, [0.0, 0.3]).tokens
    personalizer = Personalizer(family, {"t5": CountedT5(encoders["t5"], count)}, {"t5": adapters["t5"]})
    personalizer.set_history(HISTORY, INTENSITIES)
    condition = personalizer.condition(TARGET, [0.0, 0.3])
    assert condition.pooled is None
    # float32 tolerance, not bit equality: each PeCA call picks its CPU thread count from the load it measures
    # (drum_core/threads.py), and another count or batch shape sums in another order (seen: 1e-6 under load)
    torch.testing.assert_close(condition.tokens, expected[:, :length], rtol=1e-5, atol=1e-5)
    if masked:
        assert condition.attention_mask.shape == (2, length)
        assert condition.attention_mask.sum(1).tolist() == [min(count, length)] * 2
        assert condition.attention_mask[:, : min(count, length)].all()
    else:
        assert condition.attention_mask is None


def test_personalizer_refuses_encoders_that_are_not_the_family_set():
    _family, encoders, adapters = family_setup("flux")
    with pytest.raises(UnsupportedFamilyError, match="Mochi"):
        Personalizer("mochi", encoders, adapters)  # FLUX's CLIP-L is no Mochi encoder
