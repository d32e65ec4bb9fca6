"""Standalone encoders against transformers' own outputs, on tiny random CLIP and T5 models."""

import pytest
import torch

from drum_core import tiny
from drum_core.backend import TextEncoderBackend
from drum_core.encoders import HFClipBackend, HFT5Backend

PROMPTS = ["a red fox in the snow", "", "portrait of a tabby cat, soft light"]
LONG = "word " * 100  # 500 characters: far past 77 character-level tokens and 256 T5 tokens


@pytest.fixture(scope="module")
def clip_tokenizer():
    return tiny.clip_tokenizer()


@pytest.fixture(scope="module", params=["CLIPTextModel", "CLIPTextModelWithProjection"])
def clip(request, clip_tokenizer):
    model = tiny.clip_text_model(clip_tokenizer, tiny.L_WIDTH, projection=request.param.endswith("Projection"), seed=1)
    return model, HFClipBackend(model, clip_tokenizer)


@pytest.fixture(scope="module")
def t5():
    tokenizer = tiny.t5_tokenizer()
    model = tiny.t5_encoder(tokenizer, seed=2)
    return model, HFT5Backend(model, tokenizer)


def transformers_output(model, backend, prompts):
    with torch.inference_mode():
        return model(backend.token_ids(prompts), output_hidden_states=True)


def test_backends_satisfy_the_protocol(clip, t5):
    assert isinstance(clip[1], TextEncoderBackend) and isinstance(t5[1], TextEncoderBackend)
    assert (clip[1].kind, clip[1].width, clip[1].tokens_per_prompt) == ("clip", tiny.L_WIDTH, 77)
    assert (t5[1].kind, t5[1].width, t5[1].tokens_per_prompt) == ("t5", tiny.T5_WIDTH, 256)


def test_clip_states_are_raw_and_final_norm_gives_last_hidden_state(clip):
    model, backend = clip
    out = transformers_output(model, backend, PROMPTS)
    raw = backend.hidden_states(PROMPTS, -1)
    assert raw.shape == (3, 77, tiny.L_WIDTH) and raw.dtype == torch.float32
    torch.testing.assert_close(raw, out.hidden_states[-1])  # the last layer, before final_layer_norm
    torch.testing.assert_close(backend.final_norm(raw), out.last_hidden_state)
    assert (raw - out.last_hidden_state).abs().max() > 0.1  # raw really is pre-LN
    torch.testing.assert_close(backend.hidden_states(PROMPTS, -2), out.hidden_states[-2])


def test_clip_pooled_features_are_what_transformers_pools(clip):
    model, backend = clip
    out = transformers_output(model, backend, PROMPTS)
    expected = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    torch.testing.assert_close(backend.pooled_features(PROMPTS), expected)


def test_clip_pooled_can_stay_unprojected(clip_tokenizer):
    model = tiny.clip_text_model(clip_tokenizer, tiny.L_WIDTH, projection=True, seed=3)
    backend = HFClipBackend(model, clip_tokenizer, project_pooled=False)
    with torch.inference_mode():
        pooler = getattr(model, "text_model", model)(backend.token_ids(PROMPTS)).pooler_output
    torch.testing.assert_close(backend.pooled_features(PROMPTS), pooler)
    assert backend.fingerprint != HFClipBackend(model, clip_tokenizer).fingerprint
    with pytest.raises(ValueError, match="no text_projection"):
        HFClipBackend(tiny.clip_text_model(clip_tokenizer, tiny.L_WIDTH), clip_tokenizer, project_pooled=True)


@pytest.mark.parametrize("legacy", [True, False])
def test_eos_rule_mirrors_transformers(clip_tokenizer, legacy):
    """eos_token_id 2 (old configs): argmax of ids; else the first EOS. Ids where the two rules differ."""
    from transformers import CLIPTextConfig, CLIPTextModel

    eos = clip_tokenizer.eos_token_id
    config = CLIPTextConfig(
        vocab_size=eos + 10, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77
    )
    config.eos_token_id = 2 if legacy else eos
    torch.manual_seed(0)
    model = CLIPTextModel(config).eval()
    backend = HFClipBackend(model, clip_tokenizer)
    ids = torch.full((2, 77), eos)
    ids[:, 0] = clip_tokenizer.bos_token_id
    ids[0, 1:4] = torch.tensor([40, eos + 5, 41])  # a token above EOS: argmax lands on it, not on the EOS
    ids[1, 1:3] = torch.tensor([40, 41])
    positions = backend.eos_positions(ids)
    assert positions.tolist() == ([2, 3] if legacy else [4, 3])
    with torch.inference_mode():
        out = model(ids, output_hidden_states=True)
    torch.testing.assert_close(backend.final_norm(out.hidden_states[-1][torch.arange(2), positions]), out.pooler_output)


def test_clip_padding_and_truncation_use_the_tokenizer(clip_tokenizer):
    model = tiny.clip_text_model(clip_tokenizer, tiny.L_WIDTH)
    for pad in ("<|endoftext|>", "!"):  # SD1's tokenizer pads with EOS, SDXL's tokenizer_2 with "!" (id 0)
        tokenizer = tiny.clip_tokenizer(pad)
        ids = HFClipBackend(model, tokenizer).token_ids(["a cat", LONG])
        assert ids.shape == (2, 77)
        assert ids[0, -1] == tokenizer.pad_token_id and ids[0, 5] == tokenizer.eos_token_id  # BOS a</w> c a t</w> EOS
        assert ids[1, -1] == tokenizer.eos_token_id  # cut to 77 keeping the EOS
    assert tiny.clip_tokenizer("!").pad_token_id == 0


def test_empty_query_is_raw_states_of_empty_prompt_plus_its_eos(clip):
    model, backend = clip
    query = backend.empty_query()
    raw = backend.hidden_states([""], -1)
    assert query.shape == (1, 78, tiny.L_WIDTH)
    torch.testing.assert_close(query[:, :77], raw)
    torch.testing.assert_close(query[0, 77], raw[0, 1])  # "" = BOS, EOS, padding: EOS at position 1


def test_layer_out_of_range_is_named(clip):
    with pytest.raises(ValueError, match=r"CLIP layer -4 out of range: this encoder has 3 layers"):
        clip[1].hidden_states(["x"], -4)


def test_fingerprint_is_stable_and_weight_sensitive(clip_tokenizer):
    a = tiny.clip_text_model(clip_tokenizer, tiny.L_WIDTH, seed=5)
    b = tiny.clip_text_model(clip_tokenizer, tiny.L_WIDTH, seed=5)
    c = tiny.clip_text_model(clip_tokenizer, tiny.L_WIDTH, seed=6)
    assert HFClipBackend(a, clip_tokenizer).fingerprint == HFClipBackend(b, clip_tokenizer).fingerprint
    assert HFClipBackend(a, clip_tokenizer).fingerprint != HFClipBackend(c, clip_tokenizer).fingerprint
    assert HFClipBackend(a, clip_tokenizer).fingerprint != HFClipBackend(a, tiny.clip_tokenizer("!")).fingerprint


def test_t5_states_are_last_hidden_state_of_256_tokens(t5):
    model, backend = t5
    ids = backend.token_ids(PROMPTS + [LONG])
    assert ids.shape == (4, 256)
    assert ids[0, -1] == backend.tokenizer.pad_token_id
    assert ids[3, -1] == backend.tokenizer.eos_token_id  # cut to 256 keeping the EOS
    states = backend.hidden_states(PROMPTS + [LONG])
    with torch.inference_mode():
        expected = model(ids).last_hidden_state
    assert states.shape == (4, 256, tiny.T5_WIDTH)
    torch.testing.assert_close(states, expected)
    torch.testing.assert_close(backend.empty_query(), states[1:2])
    assert torch.equal(backend.final_norm(states), states) and torch.equal(backend.project(states[:, 0]), states[:, 0])
    assert backend.pooled_features(["a cat"]).shape == (1, tiny.T5_WIDTH)


def forward_calls(model: torch.nn.Module) -> tuple[list[int], object]:
    """A list that counts forward passes of the real `model` (a forward pre-hook), and the hook's handle."""
    calls: list[int] = []
    return calls, model.register_forward_pre_hook(lambda _module, _args: calls.append(1))


def test_one_clip_pass_gives_every_layer_and_the_pooled_state_exactly(clip):
    model, backend = clip
    calls, hook = forward_calls(model)
    try:
        encoding = backend.encode(PROMPTS, (-2, -1), eos=True)
    finally:
        hook.remove()
    assert len(calls) == 1 and sorted(encoding.states) == [-2, -1]
    for layer in (-2, -1):
        torch.testing.assert_close(encoding.states[layer], backend.hidden_states(PROMPTS, layer), rtol=0, atol=0)
    torch.testing.assert_close(encoding.eos, backend.raw_pooled(PROMPTS), rtol=0, atol=0)
    features = backend.project(backend.final_norm(encoding.eos))
    torch.testing.assert_close(features, backend.pooled_features(PROMPTS), rtol=0, atol=0)
    assert backend.encode(PROMPTS, (-2,)).eos is None
    with pytest.raises(ValueError, match="CLIP layer -4 out of range"):
        backend.encode(PROMPTS, (-1, -4))


def test_one_t5_pass_gives_the_states_and_eos_state(t5):
    model, backend = t5
    calls, hook = forward_calls(model)
    try:
        encoding = backend.encode(PROMPTS, (-1,), eos=True)
    finally:
        hook.remove()
    assert len(calls) == 1
    torch.testing.assert_close(encoding.states[-1], backend.hidden_states(PROMPTS), rtol=0, atol=0)
    torch.testing.assert_close(encoding.eos, backend.pooled_features(PROMPTS), rtol=0, atol=0)
