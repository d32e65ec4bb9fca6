"""The transformers CLIP and T5 backends against their models written out in float64 (not the calls they wrap)."""

import math

import pytest
import torch
import torch.nn.functional as F
from support import clip_oracle

from drum_core import tiny
from drum_core.encoders import HFClipBackend, HFT5Backend

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


def t5_bucket(relative: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional relative-position bucket: half the buckets per direction, exact up to a quarter, then log-spaced."""
    half = buckets // 2
    bucket = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    far = exact + (torch.log(distance.double().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)).long()
    return bucket + torch.where(distance < exact, distance, far.clamp(max=half - 1))


def t5_encoder_float64(model, ids: torch.Tensor) -> torch.Tensor:
    """T5's encoder written out in float64 (no padding mask, as the backend calls it): last_hidden_state [N, T, E]."""
    config = model.config
    w = {k.removeprefix("encoder."): v.double() for k, v in model.state_dict().items()}

    def rms_norm(x, weight):
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config.layer_norm_epsilon)

    x = w["embed_tokens.weight"][ids]
    n, t, _ = x.shape
    heads = config.num_heads
    positions = torch.arange(t)
    buckets = t5_bucket(
        positions[None, :] - positions[:, None], config.relative_attention_num_buckets, config.relative_attention_max_distance
    )
    bias = w["block.0.layer.0.SelfAttention.relative_attention_bias.weight"][buckets].permute(2, 0, 1)  # [heads, T, T], block 0's
    for i in range(config.num_layers):
        p = f"block.{i}.layer."
        h = rms_norm(x, w[p + "0.layer_norm.weight"])
        q, k, v = (h @ w[f"{p}0.SelfAttention.{name}.weight"].T for name in "qkv")
        q, k, v = (s.view(n, t, heads, -1).transpose(1, 2) for s in (q, k, v))
        attended = ((q @ k.transpose(-1, -2) + bias).softmax(-1) @ v).transpose(1, 2).reshape(n, t, -1)  # T5 does not scale
        x = x + attended @ w[p + "0.SelfAttention.o.weight"].T
        h = rms_norm(x, w[p + "1.layer_norm.weight"])
        gate = F.gelu(h @ w[p + "1.DenseReluDense.wi_0.weight"].T, approximate="tanh")  # gated-gelu, gelu_new
        x = x + (gate * (h @ w[p + "1.DenseReluDense.wi_1.weight"].T)) @ w[p + "1.DenseReluDense.wo.weight"].T
    return rms_norm(x, w["final_layer_norm.weight"])


def test_t5_backend_equals_a_float64_forward_through_the_layers():
    tokenizer = tiny.t5_tokenizer()
    model = tiny.t5_encoder(tokenizer, seed=12)
    backend = HFT5Backend(model, tokenizer)
    prompts = [*PROMPTS, "word " * 100]  # the last is cut to 256 tokens, keeping its EOS
    ids = tokenizer(prompts, padding="max_length", max_length=256, truncation=True, return_tensors="pt").input_ids
    ids[-1, -1] = tokenizer.eos_token_id
    expected = t5_encoder_float64(model, ids)
    torch.testing.assert_close(backend.hidden_states(prompts).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backend.empty_query().double(), expected[1:2], rtol=1e-5, atol=1e-5)
