"""The transformers CLIP backend against CLIP's text transformer written out in float64 (not the call it wraps)."""

import pytest
import torch
from support import clip_oracle

from drum_core import tiny
from drum_core.encoders import HFClipBackend

PROMPTS = ["a red fox in the snow", "", "portrait of a tabby cat, soft light"]


@pytest.mark.parametrize("projection, activation", [(False, "quick_gelu"), (True, "quick_gelu"), (False, "gelu")])
def test_clip_backend_equals_a_float64_forward_through_the_layers(projection, activation):
    tokenizer = tiny.clip_tokenizer()
    model = tiny.clip_text_model(tokenizer, tiny.L_WIDTH, projection=projection, hidden_act=activation, seed=11)
    backend = HFClipBackend(model, tokenizer)
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    tower = clip_oracle.transformers_tower(model)
    outputs, final = clip_oracle.run(tower, ids)
    for layer in (-1, -2, -3):
        torch.testing.assert_close(backend.hidden_states(PROMPTS, layer).double(), outputs[layer], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backend.final_norm(backend.hidden_states(PROMPTS, -1)).double(), final, rtol=1e-5, atol=1e-5)
    eos = [row.index(tokenizer.eos_token_id) for row in ids.tolist()]  # the first EOS of each prompt
    expected = clip_oracle.pooled(tower, final, eos)
    torch.testing.assert_close(backend.pooled_features(PROMPTS).double(), expected, rtol=1e-5, atol=1e-5)
    query = backend.empty_query().double()
    torch.testing.assert_close(query[0, :77], outputs[-1][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(query[0, 77], outputs[-1][1, eos[1]], rtol=1e-5, atol=1e-5)
