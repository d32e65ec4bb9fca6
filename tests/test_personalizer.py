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
from drum_core.personalizer import ENCODER_ADAPTERS

HISTORY = tiny.HISTORY[:4]
WEIGHTS = [1.0, 2.0, 0.5, 1.5]
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


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_personalized_condition_matches_method_table(setup, alpha):
    family, encoders, adapters = setup
    personalizer = Personalizer(family, encoders, adapters)
    personalizer.set_history(HISTORY, WEIGHTS)
    condition = personalizer.condition(TARGET, alpha)
    tokens, pooled = expected_condition(family, encoders, adapters, alpha, TARGET, HISTORY, WEIGHTS)
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
    personalizer.set_history(HISTORY, WEIGHTS)
    sweep = personalizer.condition(TARGET, [0.0, 0.5, 1.0])
    for row, alpha in enumerate([0.0, 0.5, 1.0]):
        single = personalizer.condition(TARGET, alpha)
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
    personalizer.set_history(HISTORY, WEIGHTS)
    encoded = cache.computed
    assert progress[-1][0] == progress[-1][1] > 0
    personalizer.condition("another target", 0.9)
    Personalizer(family, encoders, adapters, cache=cache).set_history(HISTORY, WEIGHTS)
    assert cache.computed == encoded


def test_rebind_keeps_the_history_and_refuses_other_encoders(setup):
    family, encoders, adapters = setup
    personalizer = Personalizer(family, encoders, adapters)
    personalizer.set_history(HISTORY, WEIGHTS)
    before = personalizer.condition(TARGET, 0.3)
    personalizer.rebind(dict(encoders))
    torch.testing.assert_close(personalizer.condition(TARGET, 0.3).tokens, before.tokens)
    with pytest.raises(ValueError, match="same encoders"):
        personalizer.rebind({name: enc for name, enc in list(encoders.items())[:-1]} if len(encoders) > 1 else {})


def test_token_layer_override():
    family, encoders, adapters = family_setup("sd1")
    personalizer = Personalizer(family, encoders, adapters, token_layer=-2)
    personalizer.set_history(HISTORY, WEIGHTS)
    tokens, _ = by_hand(encoders["l"], adapters["l"], -2, 0.3, TARGET, HISTORY, WEIGHTS)
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
    assert detect_family(["t5", "l"]) == "flux"
    with pytest.raises(ValueError, match="no supported model family"):
        detect_family(["t5"])
