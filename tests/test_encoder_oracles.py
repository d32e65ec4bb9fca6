"""The CLIP backend against CLIP's text transformer written out in float64 (not the transformers call it wraps)."""

import math

import pytest
import torch
import torch.nn.functional as F

from drum_core import tiny
from drum_core.encoders import HFClipBackend

PROMPTS = ["a red fox in the snow", "", "portrait of a tabby cat, soft light"]
ACTIVATIONS = {"quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "gelu": F.gelu}


def clip_text_float64(model, ids):
    """Every layer's output of CLIP's pre-LN causal text transformer, float64: [embeddings, block 1, ..., block L]."""
    config = model.config
    w = {k.removeprefix("text_model."): v.double() for k, v in model.state_dict().items()}
    x = w["embeddings.token_embedding.weight"][ids] + w["embeddings.position_embedding.weight"][: ids.shape[1]]
    n, t, e = x.shape
    heads = config.num_attention_heads
    causal = torch.full((t, t), -math.inf, dtype=torch.float64).triu(1)
    activation = ACTIVATIONS[config.hidden_act]
    outputs = [x]
    for i in range(config.num_hidden_layers):

        def p(name, i=i):
            return w[f"encoder.layers.{i}.{name}"]

        def linear(h, name):
            return h @ p(f"{name}.weight").T + p(f"{name}.bias")

        h = F.layer_norm(x, (e,), p("layer_norm1.weight"), p("layer_norm1.bias"), config.layer_norm_eps)
        q, k, v = (linear(h, f"self_attn.{name}_proj").view(n, t, heads, -1).transpose(1, 2) for name in "qkv")
        scores = q @ k.transpose(-1, -2) / math.sqrt(e // heads) + causal
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, e)
        x = x + linear(attended, "self_attn.out_proj")
        h = F.layer_norm(x, (e,), p("layer_norm2.weight"), p("layer_norm2.bias"), config.layer_norm_eps)
        x = x + linear(activation(linear(h, "mlp.fc1")), "mlp.fc2")
        outputs.append(x)
    final = F.layer_norm(x, (e,), w["final_layer_norm.weight"], w["final_layer_norm.bias"], config.layer_norm_eps)
    return outputs, final, w.get("text_projection.weight")


@pytest.mark.parametrize("projection, activation", [(False, "quick_gelu"), (True, "quick_gelu"), (False, "gelu")])
def test_clip_backend_equals_a_float64_forward_through_the_layers(projection, activation):
    tokenizer = tiny.clip_tokenizer()
    model = tiny.clip_text_model(tokenizer, tiny.L_WIDTH, projection=projection, hidden_act=activation, seed=11)
    backend = HFClipBackend(model, tokenizer)
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    outputs, final, text_projection = clip_text_float64(model, ids)
    for layer in (-1, -2, -3):
        torch.testing.assert_close(backend.hidden_states(PROMPTS, layer).double(), outputs[layer], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backend.final_norm(backend.hidden_states(PROMPTS, -1)).double(), final, rtol=1e-5, atol=1e-5)
    eos = [row.index(tokenizer.eos_token_id) for row in ids.tolist()]  # the first EOS of each prompt
    pooled = final[torch.arange(len(PROMPTS)), eos]
    if text_projection is not None:
        pooled = pooled @ text_projection.T
    torch.testing.assert_close(backend.pooled_features(PROMPTS).double(), pooled, rtol=1e-5, atol=1e-5)
    query = backend.empty_query().double()
    torch.testing.assert_close(query[0, :77], outputs[-1][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(query[0, 77], outputs[-1][1, eos[1]], rtol=1e-5, atol=1e-5)
