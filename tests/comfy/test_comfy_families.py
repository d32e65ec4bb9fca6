"""Every family through real comfy.sd.CLIP objects: the bridge's raw states, the conditioner's output."""

import copy
import gc

import pytest
import torch
import torch.nn.functional as F
from support.comfy_env import node_module
from support.tiny_models import CLIP_LAYERS, FAMILIES, tiny_adapter, tiny_clip

import drum_core.history
import drum_core.personalizer

pytestmark = pytest.mark.comfy

TEXT = "a red fox in the snow, morning light"
HISTORY = ["watercolor of a lighthouse", "oil painting of mountains at dusk", "ink sketch of a sleeping cat"]
WEIGHTS = [1.0, 2.0, 0.5]
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


def history(prompts=HISTORY, weights=WEIGHTS):
    payloads = node_module("io_types")
    History = drum_core.history.History
    return payloads.DrumHistory(History(list(prompts), list(weights)))


def run_conditioner(pack, clip, adapters, alpha=0.3, base=None, degrees=None, hist=None, text=TEXT):
    out = pack["DrUMConditioner"].execute(clip, choice(adapters), hist or history(), text, alpha, base, degrees)
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


def adapter_by_hand(encoder, adapter, layer, alpha, prompts, weights, text=TEXT):
    """A(ctx@layer) of `text` with `prompts` as references, in float64 on the bridge's raw states: (tokens, pooled) float32."""
    exact = copy.deepcopy(adapter).double()
    references = encoder.hidden_states(prompts, layer).double() if prompts else None
    p = torch.tensor(weights, dtype=torch.float64) if prompts else None
    with torch.inference_mode():
        tokens, pooled = exact(encoder.empty_query().double(), encoder.hidden_states([text], layer).double(), references, p, alpha)
    return tokens.float(), None if pooled is None else pooled.float()


def condition_by_hand(name, clip, adapters, alpha, prompts=HISTORY, weights=WEIGHTS):
    """The personalized (cond [1, L, D], pooled [1, P]) assembled per docs/method.md §5 from adapters run by hand;
    final LayerNorm and projection are the host's (the bridge's final_norm / project, checked against ComfyUI above)."""
    bridge = node_module("clip_bridge")
    bridge.prepare(clip)
    encoders = bridge.sub_encoders(clip)
    slots = drum_core.personalizer.ENCODER_ADAPTERS

    def run(encoder, layer):
        return adapter_by_hand(encoders[encoder], adapters[slots[encoder]], layer, alpha, prompts, weights)

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


def test_bridge_raw_states_equal_a_hand_path_through_the_transformer(family):
    name, clip = family
    bridge = node_module("clip_bridge")
    bridge.prepare(clip)
    encoders = bridge.sub_encoders(clip)
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


def test_plain_assembly_equals_comfyui_encode(family, adapters):
    """Raw states -> final LN / projection / concatenation as the family expects = ComfyUI's own output."""
    name, clip = family
    bridge = node_module("clip_bridge")
    Personalizer = drum_core.personalizer.Personalizer
    bridge.prepare(clip)
    encoders = bridge.sub_encoders(clip)
    slots = drum_core.personalizer.ENCODER_ADAPTERS
    plain = Personalizer(bridge.family_of(clip, encoders), encoders, {n: adapters[slots[n]] for n in encoders}).plain_condition(TEXT)
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


def test_conditioner_output_per_family(family, adapters, pack):
    name, clip = family
    conditioning, ui = run_conditioner(pack, clip, adapters)
    assert len(conditioning) == 1
    cond, extras = conditioning[0]
    assert tuple(cond.shape) == SHAPES[name][0] and cond.dtype == torch.float32
    assert tuple(extras["pooled_output"].shape) == SHAPES[name][1]
    tokens, pooled = condition_by_hand(name, clip, adapters, 0.3)
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


def test_adapters_read_the_raw_states_of_the_sub_encoders(family, adapters, pack, monkeypatch):
    """The adapters' inputs (query, target, references) = raw states by the hand path (T5: ComfyUI's own T5 output)."""
    name, clip = family
    slots = drum_core.personalizer.ENCODER_ADAPTERS
    node_module("caches")._personalizers.clear()
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
        run_conditioner(pack, clip, adapters, alpha=0.5)
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


def test_degree_zero_is_the_adapter_reconstruction(family, adapters, pack):
    """alpha = 0: the references have no say; the adapter reconstructs the target."""
    name, clip = family
    with_history, _ = run_conditioner(pack, clip, adapters, alpha=0.0)
    other_history, _ = run_conditioner(pack, clip, adapters, alpha=0.0, hist=history(["a completely different prompt"], [3.0]))
    torch.testing.assert_close(with_history[0][0], other_history[0][0], rtol=0, atol=1e-5)
    tokens, pooled = condition_by_hand(name, clip, adapters, 0.0, prompts=[], weights=[])  # no references at all
    torch.testing.assert_close(with_history[0][0], tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_history[0][1]["pooled_output"], pooled, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layers", [(-1,), (-2, -1), (-3, -2, -1)])
def test_bridge_reads_every_layer_and_the_pooled_state_from_one_pass(family, layers):
    """encode(prompts, layers, pooled) equals the single-layer reads exactly, from ONE transformer pass (also per chunk)."""
    _name, clip = family
    bridge = node_module("clip_bridge")
    bridge.prepare(clip)
    prompts = [TEXT] + HISTORY
    for encoder in bridge.sub_encoders(clip).values():
        if encoder.kind == "clip" and min(layers) + encoder.layer_shift < -CLIP_LAYERS:
            continue  # SD2's clip_h reads one layer lower: (-3, -2, -1) is out of the tiny stack
        passes = []
        hook = encoder.module.transformer.register_forward_pre_hook(lambda *_, passes=passes: passes.append(1))
        try:
            encoding = encoder.encode(prompts, layers, pooled=True)
            chunks = encoder.prompt_chunks(TEXT, layers, pooled=True)
        finally:
            hook.remove()
        assert len(passes) == 2 and sorted(encoding.states) == sorted(layers)
        for layer in layers:
            torch.testing.assert_close(encoding.states[layer], encoder.hidden_states(prompts, layer), rtol=0, atol=0)
            torch.testing.assert_close(chunks.states[layer], encoder.hidden_states([TEXT], layer), rtol=0, atol=0)
        features = encoder.project(encoder.final_norm(encoding.pooled))
        torch.testing.assert_close(features, encoder.pooled_features(prompts), rtol=0, atol=0)
