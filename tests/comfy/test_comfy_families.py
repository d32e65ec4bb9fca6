"""Every family through real comfy.sd.CLIP objects: the bridge's raw states, the conditioner's output."""

import copy
import gc
import json

import pytest
import torch
import torch.nn.functional as F
from support.comfy_env import ROOT, node_module
from support.tiny_models import CLIP_LAYERS, FAMILIES, NEW_FAMILIES, tiny_adapter, tiny_clip

import drum_core.history
import drum_core.personalizer

pytestmark = pytest.mark.comfy

TEXT = "a red fox in the snow, morning light"
HISTORY = ["watercolor of a lighthouse", "oil painting of mountains at dusk", "ink sketch of a sleeping cat"]
INTENSITIES = [1.0, 2.0, 0.5]
SHAPES = {  # family -> (cond [1, L, D], pooled [1, P]) of docs/method.md §5 / docs/comfyui.md
    "sd1": ((1, 77, 768), (1, 768)),
    "sd2": ((1, 77, 1024), (1, 1024)),
    "sdxl": ((1, 77, 2048), (1, 1280)),
    "sd3": ((1, 77 + 256, 4096), (1, 2048)),
    "flux": ((1, 256, 4096), (1, 768)),
}
ENCODERS = {"sd1": {"l"}, "sd2": {"h"}, "sdxl": {"l", "g"}, "sd3": {"l", "g", "t5"}, "flux": {"l", "t5"}}
CONTEXT_LAYERS = {  # family -> CLIP encoder -> the layers its adapter reads (tokens, pooled)
    "sd1": {"l": (-1,)},
    "sd2": {"h": (-1,)},
    "sdxl": {"l": (-2,), "g": (-2, -1)},
    "sd3": {"l": (-2, -1), "g": (-2, -1)},
    "flux": {"l": (-1,)},
}
ATTRIBUTES = {"l": "clip_l", "h": "clip_h", "g": "clip_g"}
ASSEMBLY = {  # docs/method.md §5: (token encoders, their layer, final LayerNorm on tokens, pooled encoders)
    "sd1": (("l",), -1, True, ("l",)),
    "sd2": (("h",), -1, True, ("h",)),
    "sdxl": (("l", "g"), -2, False, ("g",)),
    "sd3": (("l", "g"), -2, False, ("l", "g")),
    "flux": ((), -1, False, ("l",)),
}


@pytest.fixture(scope="module")
def adapters(pack):
    return {name: tiny_adapter(name, seed=i) for i, name in enumerate(("L", "H", "bigG", "T5"))}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, pack):
    clip = tiny_clip(request.param, seed=FAMILIES.index(request.param))
    yield request.param, clip
    del clip
    gc.collect()


def choice(adapters):
    payloads = node_module("io_types")
    return payloads.AdapterChoice(dict(adapters), {slot: f"{slot} (test)" for slot in adapters})


def history(prompts=HISTORY, intensities=INTENSITIES):
    payloads = node_module("io_types")
    History = drum_core.history.History
    return payloads.DrumHistory(History(list(prompts), list(intensities)))


def run_conditioner(pack, clip, adapters, degree=0.3, base=None, degrees=None, hist=None, text=TEXT):
    out = pack["DrUMConditioner"].execute(clip, choice(adapters), hist or history(), text, degree, base, degrees)
    return out.args[0], out.ui


def hand_raw_states(clip, attribute, text, comfy_layer):
    """Raw states [1, 77, E] by a path of our own: every layer's output ("all"), no final LayerNorm."""
    sub = getattr(clip.cond_stage_model, attribute)
    tokens = [[t for t, _ in clip.tokenize(text)[attribute.removeprefix("clip_")][0]]]
    embeds, _mask, num_tokens, _info = sub.process_tokens(tokens, "cpu")
    _x, every, _projected, _pooled = sub.transformer(
        None, None, embeds=embeds, num_tokens=num_tokens, intermediate_output="all", final_layer_norm_intermediate=False
    )
    return every[:, comfy_layer]


def comfy_encode(clip, text, t5_tokens=256):
    """ComfyUI's own encode (T5 padded to 256 tokens as the adapter path reads it), on a clone."""
    c = clip.clone()
    c.set_tokenizer_option("t5xxl_min_length", t5_tokens)
    return c.encode_from_tokens(c.tokenize(text), return_pooled=True)


def adapter_by_hand(encoder, adapter, layer, degree, prompts, intensities, text=TEXT):
    """A(ctx@layer) of `text` with `prompts` as references, in float64 on the bridge's raw states: (tokens, pooled) float32."""
    exact = copy.deepcopy(adapter).double()
    references = encoder.hidden_states(prompts, layer).double() if prompts else None
    p = torch.tensor(intensities, dtype=torch.float64) if prompts else None
    with torch.inference_mode():
        tokens, pooled = exact(encoder.empty_query().double(), encoder.hidden_states([text], layer).double(), references, p, degree)
    return tokens.float(), None if pooled is None else pooled.float()


def condition_by_hand(state, name, clip, adapters, degree, prompts=HISTORY, intensities=INTENSITIES):
    """The personalized (cond [1, L, D], pooled [1, P]) assembled per docs/method.md §5 from adapters run by hand;
    final LayerNorm and projection are the host's (the bridge's final_norm / project, checked against ComfyUI above)."""
    bridge = node_module("clip_bridge")
    bridge.prepare(clip)
    encoders = bridge.open_clip(state, clip).encoders
    slots = drum_core.personalizer.ENCODER_ADAPTERS

    def run(encoder, layer):
        return adapter_by_hand(encoders[encoder], adapters[slots[encoder]], layer, degree, prompts, intensities)

    token_encoders, layer, normalize, pooled_encoders = ASSEMBLY[name]
    parts = [run(e, layer)[0] for e in token_encoders]
    parts = [encoders[e].final_norm(part) if normalize else part for e, part in zip(token_encoders, parts)]
    pooled = torch.cat([encoders[e].project(encoders[e].final_norm(run(e, -1)[1])) for e in pooled_encoders], -1)
    if name == "flux":
        return run("t5", -1)[0], pooled
    tokens = torch.cat(parts, -1)
    if name == "sd3":  # CLIP part zero-padded to the T5 width, then the T5 tokens
        tokens = torch.cat([F.pad(tokens, (0, 4096 - tokens.shape[-1])), run("t5", -1)[0]], 1)
    return tokens, pooled


def test_bridge_raw_states_equal_a_hand_path_through_the_transformer(state, family):
    name, clip = family
    bridge = node_module("clip_bridge")
    bridge.prepare(clip)
    encoders = bridge.open_clip(state, clip).encoders
    assert set(encoders) == ENCODERS[name]
    for key, encoder in encoders.items():
        if encoder.kind == "t5":
            continue
        shift = -1 if key == "h" else 0
        for layer in (-1, -2):
            expected = hand_raw_states(clip, encoder.attribute, TEXT, layer + shift)
            torch.testing.assert_close(encoder.hidden_states([TEXT], layer), expected, rtol=0, atol=1e-5)
        query = encoder.empty_query()
        assert query.shape == (1, 78, encoder.width)
        top = hand_raw_states(clip, encoder.attribute, "", -1 + shift)
        torch.testing.assert_close(query[:, :77], top, rtol=0, atol=1e-5)
        torch.testing.assert_close(query[0, 77], top[0, 1], rtol=0, atol=1e-5)  # "" = BOS, EOS: the EOS sits at 1


def test_plain_assembly_equals_comfyui_encode(state, family, adapters):
    """Raw states -> final LN / projection / concatenation as the family expects = ComfyUI's own output."""
    name, clip = family
    bridge = node_module("clip_bridge")
    Personalizer = drum_core.personalizer.Personalizer
    bridge.prepare(clip)
    encoders = bridge.open_clip(state, clip).encoders
    slots = drum_core.personalizer.ENCODER_ADAPTERS
    plain = Personalizer(bridge.family_of(clip), encoders, {n: adapters[slots[n]] for n in encoders}).plain_condition(TEXT)
    cond, pooled = comfy_encode(clip, TEXT)
    assert plain.tokens.shape == cond.shape == SHAPES[name][0]
    torch.testing.assert_close(plain.tokens, cond, rtol=0, atol=1e-5)
    if name == "sd2":  # pooled of the adapter's top layer (23 of 24), not ComfyUI's layer 24 (ignored by SD2)
        h = encoders["h"]
        raw_top = hand_raw_states(clip, "clip_h", TEXT, -2)
        eos = clip.tokenize(TEXT)["h"][0].index((49407, 1.0))
        expected = h.module.transformer.text_projection(h.module.transformer.text_model.final_layer_norm(raw_top[:, eos]))
        torch.testing.assert_close(plain.pooled, expected, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(plain.pooled, pooled, rtol=0, atol=1e-5)


def test_conditioner_output_per_family(state, family, adapters, pack):
    name, clip = family
    conditioning, ui = run_conditioner(pack, clip, adapters)
    assert len(conditioning) == 1
    cond, extras = conditioning[0]
    assert tuple(cond.shape) == SHAPES[name][0] and cond.dtype == torch.float32
    assert tuple(extras["pooled_output"].shape) == SHAPES[name][1]
    tokens, pooled = condition_by_hand(state, name, clip, adapters, 0.3)
    torch.testing.assert_close(cond, tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(extras["pooled_output"], pooled, rtol=1e-4, atol=1e-4)
    plain, plain_pooled = comfy_encode(clip, TEXT)
    assert not torch.allclose(cond, plain, atol=1e-3)  # the adapters changed the condition
    assert ui["drum_conditioning"][0]["family"] == name
    assert [r["prompt"] for r in ui["drum_conditioning"][0]["references"]] == HISTORY
    if name == "sd3":  # CLIP part zero-padded from 2048 to 4096 wide
        assert torch.count_nonzero(cond[:, :77, 2048:]) == 0


def test_empty_history_gives_clip_text_encode_output(family, adapters, pack):
    _name, clip = family
    conditioning, _ = run_conditioner(pack, clip, adapters, hist=history([], []))
    from nodes import CLIPTextEncode  # ComfyUI's own node

    (reference,) = CLIPTextEncode().encode(clip, TEXT)
    torch.testing.assert_close(conditioning[0][0], reference[0][0], rtol=0, atol=0)
    torch.testing.assert_close(conditioning[0][1]["pooled_output"], reference[0][1]["pooled_output"], rtol=0, atol=0)
    assert set(conditioning[0][1]) == set(reference[0][1])


def test_adapters_read_the_raw_states_of_the_sub_encoders(state, family, adapters, pack, monkeypatch):
    """The adapters' inputs (query, target, references) = raw states by the hand path (T5: ComfyUI's own T5 output)."""
    name, clip = family
    slots = drum_core.personalizer.ENCODER_ADAPTERS
    state.personalizers.clear()
    targets, references, queries = {}, {}, {}
    hooks = []
    for slot in ("L", "H", "bigG", "T5"):
        adapter = adapters[slot]
        encode = adapter.encode_references

        def spy(states, slot=slot, encode=encode):  # records, then runs the real method
            references.setdefault(slot, []).append(states.clone())
            return encode(states)

        monkeypatch.setattr(adapter, "encode_references", spy)

        def record(_module, args, slot=slot):  # a pre-hook returning None leaves the inputs alone
            queries.setdefault(slot, args[0].clone())
            targets.setdefault(slot, []).append(args[1].clone())

        hooks.append(adapter.register_forward_pre_hook(record))
    try:
        run_conditioner(pack, clip, adapters, degree=0.5)
    finally:
        for hook in hooks:
            hook.remove()

    def found(expected, candidates):
        best = min((c - expected).abs().max().item() for c in torch.cat(candidates))
        return best <= 1e-5 * max(1.0, expected.abs().max().item())

    for encoder, layers in CONTEXT_LAYERS[name].items():
        slot, shift = slots[encoder], (-1 if encoder == "h" else 0)
        assert len(references[slot]) == len(layers)
        top = hand_raw_states(clip, ATTRIBUTES[encoder], "", -1 + shift)
        torch.testing.assert_close(queries[slot], torch.cat([top, top[:, 1:2]], 1), rtol=0, atol=1e-5)
        for layer in layers:
            assert found(hand_raw_states(clip, ATTRIBUTES[encoder], TEXT, layer + shift)[0], targets[slot]), (encoder, layer)
            for prompt in HISTORY:
                assert found(hand_raw_states(clip, ATTRIBUTES[encoder], prompt, layer + shift)[0], references[slot]), (
                    encoder,
                    layer,
                    prompt,
                )
    if "t5" not in ENCODERS[name]:
        assert "T5" not in references
        return

    def t5_states(text):  # the T5 part of ComfyUI's own encode (FLUX: all of it; SD3: after the 77 CLIP tokens)
        return comfy_encode(clip, text)[0][:, -256:]

    assert len(references["T5"]) == 1 and references["T5"][0].shape == (len(HISTORY), 256, 4096)
    torch.testing.assert_close(queries["T5"], t5_states(""), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(targets["T5"][0][:1], t5_states(TEXT), rtol=1e-5, atol=1e-5)
    for i, prompt in enumerate(HISTORY):
        torch.testing.assert_close(references["T5"][0][i : i + 1], t5_states(prompt), rtol=1e-5, atol=1e-5)


def test_degree_zero_is_the_adapter_reconstruction(state, family, adapters, pack):
    """alpha = 0: the references have no say; the adapter reconstructs the target."""
    name, clip = family
    with_history, _ = run_conditioner(pack, clip, adapters, degree=0.0)
    other_history, _ = run_conditioner(pack, clip, adapters, degree=0.0, hist=history(["a completely different prompt"], [3.0]))
    torch.testing.assert_close(with_history[0][0], other_history[0][0], rtol=0, atol=1e-5)
    tokens, pooled = condition_by_hand(state, name, clip, adapters, 0.0, prompts=[], intensities=[])  # no references at all
    torch.testing.assert_close(with_history[0][0], tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_history[0][1]["pooled_output"], pooled, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layers", [(-1,), (-2, -1), (-3, -2, -1)])
def test_bridge_reads_every_layer_and_the_pooled_state_from_one_pass(state, family, layers):
    """encode(prompts, layers, eos) equals the single-layer reads exactly, from ONE transformer pass (also per chunk)."""
    _name, clip = family
    bridge = node_module("clip_bridge")
    bridge.prepare(clip)
    prompts = [TEXT] + HISTORY
    for encoder in bridge.open_clip(state, clip).encoders.values():
        if encoder.kind == "clip" and min(layers) + encoder.layer_shift < -CLIP_LAYERS:
            continue  # SD2's clip_h reads one layer lower: (-3, -2, -1) is out of the tiny stack
        passes = []
        hook = encoder.module.transformer.register_forward_pre_hook(lambda *_, passes=passes: passes.append(1))
        try:
            encoding = encoder.encode(prompts, layers, eos=True)
            chunks = encoder.prompt_chunks(TEXT, layers, eos=True)
        finally:
            hook.remove()
        assert len(passes) == 2 and sorted(encoding.states) == sorted(layers)
        for layer in layers:
            torch.testing.assert_close(encoding.states[layer], encoder.hidden_states(prompts, layer), rtol=0, atol=0)
            torch.testing.assert_close(chunks.states[layer], encoder.hidden_states([TEXT], layer), rtol=0, atol=0)
        features = encoder.project(encoder.final_norm(encoding.eos))
        torch.testing.assert_close(features, encoder.pooled_features(prompts), rtol=0, atol=0)


# ---------------------------------------------------------------------- the T5 adapter's families, and HiDream
NEW_SHAPES = {  # family -> (T5 tokens of TEXT's condition, pooled width or None, attention mask in the conditioning)
    "pixart": (None, None, False),  # the prompt's own token count (no padding)
    "ltxv": (128, None, True),
    "mochi": (256, None, True),
    "hidream": (128, 768 + 1280, False),
}


@pytest.fixture(scope="module", params=NEW_FAMILIES)
def new_family(request, pack):
    clip = tiny_clip(request.param, seed=10 + NEW_FAMILIES.index(request.param))
    yield request.param, clip
    del clip
    gc.collect()


def comfy_t5(clip, text, tokens=None):
    """ComfyUI's own encode of `text` (its conditioning and extras), its T5 padded to `tokens` where given."""
    c = clip.clone()
    if tokens is not None:
        c.set_tokenizer_option("t5xxl_min_length", tokens)
    return c.encode_from_tokens_scheduled(c.tokenize(text))[0]


def t5_adapter_by_hand(clip, adapter, degree, prompts, intensities, text=TEXT):
    """The T5 adapter in float64 on ComfyUI's own T5 states at 256 tokens (mask as the family runs it): tokens [1, 256, 4096]."""
    exact = copy.deepcopy(adapter).double()
    states = [comfy_t5(clip, p, 256)[0].double() for p in [text, "", *prompts]]
    references = torch.cat(states[2:]) if prompts else None
    p = torch.tensor(intensities, dtype=torch.float64) if prompts else None
    with torch.inference_mode():
        tokens, _ = exact(states[1], states[0], references, p, degree)
    return tokens.float()


def test_new_family_is_its_declared_set_and_passes_the_host_check(state, new_family):
    name, clip = new_family
    bridge = node_module("clip_bridge")
    opened = bridge.open_clip(state, clip)  # runs check_host at the family's conventions
    spec = drum_core.personalizer.FAMILIES[name]
    assert opened.family == name and set(opened.encoders) == set(spec.encoders)
    t5 = opened.encoders["t5"]
    assert t5.kind == "t5" and t5.width == 4096
    assert t5.module.enable_attention_masks == spec.t5.attention_mask


def test_new_family_conditioning_equals_an_independent_computation(state, new_family, adapters, pack):
    """T5 adapter on ComfyUI's own 256-token states, cut to the family's own length for the prompt; the attention mask
    is the family's own; HiDream: pooled cat(P_L(LN(A_L)), P_G(LN(A_G))) and its Llama states passed through as ComfyUI gives them."""
    name, clip = new_family
    conditioning, ui = run_conditioner(pack, clip, adapters)
    cond, extras = conditioning[0]
    own_cond, own_extras = comfy_t5(clip, TEXT)  # ComfyUI's own encode of the prompt: its length and extras
    length, pooled_width, masked = NEW_SHAPES[name]
    length = own_cond.shape[1] if length is None else length
    assert own_cond.shape[1] == length and tuple(cond.shape) == (1, length, 4096)
    expected = t5_adapter_by_hand(clip, adapters["T5"], 0.3, HISTORY, INTENSITIES)[:, :length]
    torch.testing.assert_close(cond, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(cond, own_cond, atol=1e-3)  # the adapter changed the condition
    assert ui["drum_conditioning"][0]["family"] == name
    assert ("attention_mask" in extras) == masked == ("attention_mask" in own_extras)
    if masked:
        torch.testing.assert_close(extras["attention_mask"], own_extras["attention_mask"], rtol=0, atol=0)
    if pooled_width is None:
        assert "pooled_output" not in extras or extras["pooled_output"] is None
    else:
        bridge = node_module("clip_bridge")
        encoders = bridge.open_clip(state, clip).encoders
        slots = drum_core.personalizer.ENCODER_ADAPTERS
        pooled = torch.cat(
            [
                encoders[e].project(
                    encoders[e].final_norm(adapter_by_hand(encoders[e], adapters[slots[e]], -1, 0.3, HISTORY, INTENSITIES)[1])
                )
                for e in ("l", "g")
            ],
            -1,
        )
        assert tuple(extras["pooled_output"].shape) == (1, pooled_width)
        torch.testing.assert_close(extras["pooled_output"], pooled, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(extras["conditioning_llama3"], own_extras["conditioning_llama3"], rtol=0, atol=0)


@pytest.mark.parametrize("padding", [1, 200])
def test_new_family_follows_t5_min_padding(new_family, adapters, pack, padding):
    """T5TokenizerOptions' `min_padding` (ComfyUI's Chroma workflow sets 1): the host appends that many pad tokens
    after EOS before its minimum length applies; the condition keeps ComfyUI's own length and mask for it (200: past
    LTX-Video's 128, capped at HiDream's 128 and the adapter's 256)."""
    name, clip = new_family
    padded = clip.clone()
    padded.set_tokenizer_option("t5xxl_min_padding", padding)
    conditioning, _ui = run_conditioner(pack, padded, adapters)
    cond, extras = conditioning[0]
    own_cond, own_extras = comfy_t5(padded, TEXT)
    length = min(own_cond.shape[1], 256)
    assert tuple(cond.shape) == (1, length, 4096), (name, tuple(cond.shape), tuple(own_cond.shape))
    expected = t5_adapter_by_hand(clip, adapters["T5"], 0.3, HISTORY, INTENSITIES)[:, :length]  # same ids: pads to 256
    torch.testing.assert_close(cond, expected, rtol=1e-4, atol=1e-4)
    assert ("attention_mask" in extras) == ("attention_mask" in own_extras)
    if "attention_mask" in extras:
        torch.testing.assert_close(extras["attention_mask"], own_extras["attention_mask"][:, :length], rtol=0, atol=0)


def test_new_family_padding_of_a_long_prompt_is_comfyuis(new_family, adapters, pack):
    """A prompt past HiDream's 128 T5 tokens: ComfyUI pads only its last chunk, HiDream keeps the first (unpadded)."""
    name, clip = new_family
    padded = clip.clone()
    padded.set_tokenizer_option("t5xxl_min_padding", 1)
    text = ", ".join([TEXT] * 14)
    conditioning, _ui = run_conditioner(pack, padded, adapters, text=text)
    cond, extras = conditioning[0]
    own_cond, own_extras = comfy_t5(padded, text)
    assert own_cond.shape[1] == 128 if name == "hidream" else 128 < own_cond.shape[1] <= 256  # long, within the adapter's 256
    assert tuple(cond.shape) == tuple(own_cond.shape), name
    if "attention_mask" in extras:
        torch.testing.assert_close(extras["attention_mask"], own_extras["attention_mask"], rtol=0, atol=0)


def test_new_family_empty_history_is_clip_text_encode(new_family, adapters, pack):
    _name, clip = new_family
    conditioning, _ = run_conditioner(pack, clip, adapters, hist=history([], []))
    from nodes import CLIPTextEncode  # ComfyUI's own node

    (reference,) = CLIPTextEncode().encode(clip, TEXT)
    torch.testing.assert_close(conditioning[0][0], reference[0][0], rtol=0, atol=0)
    assert set(conditioning[0][1]) == set(reference[0][1])
    for key, value in reference[0][1].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(conditioning[0][1][key], value, rtol=0, atol=0)


def test_host_check_sees_a_t5_path_without_the_family_mask(state, pack, monkeypatch):
    """LTX-Video masks T5 padding: a raw-state path that dropped the mask must fail the self-check (a host drift)."""
    bridge = node_module("clip_bridge")
    clip = tiny_clip("ltxv", seed=21)
    monkeypatch.setattr(bridge.ComfySubEncoder, "_pass", unmasked_pass(bridge.ComfySubEncoder._pass))
    with pytest.raises(bridge.HostMismatchError, match="t5xxl"):
        bridge.open_clip(state, clip)


def unmasked_pass(original):
    def run(self, chunks, layers, eos=False, eos_layer=-1):
        previous = self.module.enable_attention_masks
        self.module.enable_attention_masks = False
        try:
            return original(self, chunks, layers, eos, eos_layer)
        finally:
            self.module.enable_attention_masks = previous

    return run


@pytest.mark.parametrize("present", [{"clip_l": True, "clip_g": True, "t5": False}, {"clip_l": False, "clip_g": False, "t5": True}])
def test_sd3_stack_without_some_encoders_stays_sd3(state, pack, adapters, present):
    """TripleCLIPLoader / CLIPLoader(type sd3) with encoders left out: ComfyUI keeps them as None slots, zero-filled in
    its encode; DrUM personalizes what is there, as SD3 (never SDXL or a T5-only family)."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.sd3_clip
    from support.tiny_models import SHRINK, randomize

    target = comfy.supported_models_base.ClipTarget(
        comfy.text_encoders.sd3_clip.SD3Tokenizer, comfy.text_encoders.sd3_clip.sd3_clip(**present)
    )
    clip = comfy.sd.CLIP(target, model_options=dict(SHRINK))
    randomize(clip.cond_stage_model, 31)
    bridge = node_module("clip_bridge")
    opened = bridge.open_clip(state, clip)
    assert opened.family == "sd3"
    assert set(opened.encoders) == ({"l", "g"} if present["clip_l"] else {"t5"})
    conditioning, ui = run_conditioner(pack, clip, adapters)
    cond, extras = conditioning[0]
    assert ui["drum_conditioning"][0]["family"] == "sd3"
    assert tuple(extras["pooled_output"].shape) == (1, 2048)
    assert tuple(cond.shape) == ((1, 77, 4096) if present["clip_l"] else (1, 256, 4096))


FAMILY_NAMES = {  # drum_core.personalizer.FAMILIES -> how the conditioner's texts name the family
    "sd1": "SD1",
    "sd2": "SD2",
    "sdxl": "SDXL",
    "sd3": "SD3",
    "flux": "FLUX",
    "pixart": "Chroma/PixArt",
    "ltxv": "LTX-Video",
    "mochi": "Mochi",
    "hidream": "HiDream",
}


def test_conditioner_texts_name_every_supported_family_and_the_refusal(pack):
    """The node's description and clip tooltip (schema, locales en and fr) and its help page list every family DrUM
    personalizes, and say that other encoder sets are refused; a family added to FAMILIES must be named here too."""
    assert set(FAMILY_NAMES) == set(drum_core.personalizer.FAMILIES)
    schema = node_module("conditioner").DrUMConditioner.define_schema()
    texts = {
        "schema description": (schema.description, "refused"),
        "schema clip tooltip": (next(i.tooltip for i in schema.inputs if i.id == "clip"), "refused"),
    }
    for lang, refused in (("en", "refused"), ("fr", "refusé")):
        entry = json.loads((ROOT / "locales" / lang / "nodeDefs.json").read_text(encoding="utf-8"))["DrUMConditioner"]
        texts[f"{lang} description"] = (entry["description"], refused)
        texts[f"{lang} clip tooltip"] = (entry["inputs"]["clip"]["tooltip"], refused)
    for where, (text, refused) in texts.items():
        missing = [name for name in FAMILY_NAMES.values() if name not in text]
        assert not missing and refused in text, (where, missing, text)
    page = (ROOT / "web" / "docs" / "DrUMConditioner.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip() for line in page.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    names = [part for name in FAMILY_NAMES.values() for part in name.split("/")]
    assert all(any(name in row for row in rows) for name in names), (names, rows)
    assert "stops the run before anything is computed" in page
