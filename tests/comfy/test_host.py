"""The pack under its host: self-check against ComfyUI's own encode, LoRAs on the pack's path, cache keys,
execution device and context, adapters under ComfyUI's model management."""

import gc
import hashlib
import os
import re

import pytest
import torch
from support.comfy_env import node_module
from support.tiny_models import FAMILIES, bypass_lora, tiny_adapter, tiny_clip

import drum_core.fingerprint
import drum_core.history

pytestmark = pytest.mark.comfy

TEXT = "a red fox in the snow, morning light"
HISTORY = ["watercolor of a lighthouse", "oil painting of mountains at dusk"]


@pytest.fixture
def bridge(pack, state):
    """nodes/clip_bridge, the pack's record of checked encoders emptied (every encoder is checked again)."""
    state.host_checked.clear()
    return node_module("clip_bridge")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, pack):
    clip = tiny_clip(request.param, seed=40 + FAMILIES.index(request.param))
    yield request.param, clip
    del clip
    gc.collect()


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny_clip("sd1", seed=50)


def run_conditioner(pack, clip, adapters, text=TEXT, degree=0.3):
    io_types = node_module("io_types")
    choice = io_types.AdapterChoice(dict(adapters), {slot: f"{slot} (test)" for slot in adapters})
    history = io_types.DrumHistory(drum_core.history.History(list(HISTORY), [1.0] * len(HISTORY)))
    return pack["DrUMConditioner"].execute(clip, choice, history, text, degree, None, None).args[0]


def comfy_tokens(clip, text=TEXT):
    """ComfyUI's own text encode (tokens [1, 77, E], pooled)."""
    return clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)


def pack_sd1_tokens(state, bridge, clip, text=TEXT):
    """SD1 tokens by the pack's raw-state path: final LayerNorm of the raw last-layer states."""
    bridge.prepare(clip, text)
    encoder = bridge.open_clip(state, clip).encoders["l"]
    return encoder.final_norm(encoder.hidden_states([text], -1))


# ---------------------------------------------------------------------- host self-check
def test_self_check_passes_on_comfyui_and_stops_when_its_encode_drifts(state, family, bridge, monkeypatch):
    import comfy.sd1_clip

    name, clip = family
    bridge.prepare(clip)
    encoders = bridge.open_clip(state, clip).encoders  # unpatched ComfyUI: every encoder passes
    assert all((name, e.fingerprint) in state.host_checked for e in encoders.values())
    assert bridge.COMFYUI_VERSION == "0.3.75" or "DRUM_COMFY_DIR" in os.environ  # the version the error names

    original = comfy.sd1_clip.SDClipModel.forward

    def drifting(self, tokens):  # ComfyUI's public encode moves away from its intermediate states
        z, *rest = original(self, tokens)
        return (z + 0.01 * z.abs().max(), *rest)

    monkeypatch.setattr(comfy.sd1_clip.SDClipModel, "forward", drifting)
    state.host_checked.clear()
    expected = rf"(clip_[lhg]|t5xxl) text encoder .* tokens .* ComfyUI {re.escape(bridge.COMFYUI_VERSION)}\..*Update ComfyUI-DrUM"
    with pytest.raises(bridge.HostMismatchError, match=expected):
        bridge.open_clip(state, clip)
    assert len(state.host_checked) < len(encoders)  # the drifting encoder is not recorded as checked


def test_drifting_final_layer_norm_stops_the_conditioner_before_any_adapter_runs(pack, sd1, bridge, monkeypatch):
    """CLIPTextModel_.forward drifts (the LayerNorm'd output no longer matches LN of its raw states): named node error."""
    import comfy.clip_model

    original = comfy.clip_model.CLIPTextModel_.forward

    def drifting(self, *args, **kwargs):
        x, intermediate, pooled = original(self, *args, **kwargs)
        return x * 1.01, intermediate, pooled * 1.01

    monkeypatch.setattr(comfy.clip_model.CLIPTextModel_, "forward", drifting)
    adapter = tiny_adapter("L", seed=3)
    calls = []
    adapter.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(bridge.HostMismatchError, match=r"clip_l text encoder \(sd1\).* by up to [0-9.e-]+ "):
        run_conditioner(pack, sd1, {"L": adapter})
    assert not calls


def test_self_check_compares_only_what_the_family_uses(state, pack, bridge):
    """SDXL checkpoints carry no CLIP-L text projection (ComfyUI leaves it uninitialised and drops that pooled vector)."""
    clip = tiny_clip("sdxl", seed=52)
    with torch.no_grad():
        clip.cond_stage_model.clip_l.transformer.text_projection.weight.fill_(float("nan"))
    bridge.prepare(clip)
    encoders = bridge.open_clip(state, clip).encoders
    assert all(("sdxl", e.fingerprint) in state.host_checked for e in encoders.values())


# ---------------------------------------------------------------------- LoRAs on the pack's path
def test_clip_lora_loaded_by_comfyui_applies_on_the_pack_path(state, pack, sd1, bridge):
    import comfy.sd

    generator = torch.Generator().manual_seed(7)
    lora = {}
    for layer, part, (out_width, in_width) in ((0, "mlp_fc1", (128, 768)), (1, "self_attn_q_proj", (768, 768))):
        key = f"lora_te_text_model_encoder_layers_{layer}_{part}"
        lora[f"{key}.lora_up.weight"] = torch.randn(out_width, 4, generator=generator) * 0.5
        lora[f"{key}.lora_down.weight"] = torch.randn(4, in_width, generator=generator) * 0.5
        lora[f"{key}.alpha"] = torch.tensor(4.0)
    _, patched = comfy.sd.load_lora_for_models(None, sd1, lora, 0.0, 1.0)  # what LoraLoader does for the CLIP
    assert len(patched.patcher.patches) == 2

    plain = pack_sd1_tokens(state, bridge, sd1)
    fingerprint = bridge.open_clip(state, sd1).encoders["l"].fingerprint
    with_lora = pack_sd1_tokens(state, bridge, patched)  # the self-check ran again on the patched encoder and passed
    assert bridge.open_clip(state, patched).encoders["l"].fingerprint != fingerprint
    torch.testing.assert_close(with_lora, comfy_tokens(patched)[0], rtol=0, atol=1e-5)
    assert not torch.allclose(with_lora, plain, atol=1e-3)
    torch.testing.assert_close(pack_sd1_tokens(state, bridge, sd1), plain, rtol=0, atol=1e-5)  # the base CLIP is untouched


def test_bypass_style_injection_changes_the_fingerprint_and_applies_on_the_pack_path(state, pack, sd1, bridge):
    """An injection (how bypass LoRAs are attached: patcher.set_injections) that adds h(x) to a layer's output."""
    original = []
    clone = bypass_lora(sd1, seed=8, injected=original)
    plain = pack_sd1_tokens(state, bridge, sd1)
    fingerprint = bridge.open_clip(state, sd1).encoders["l"].fingerprint
    try:
        injected = pack_sd1_tokens(state, bridge, clone)
        assert original, "ComfyUI injected when loading the clone"
        assert bridge.open_clip(state, clone).encoders["l"].fingerprint != fingerprint
        torch.testing.assert_close(injected, comfy_tokens(clone)[0], rtol=0, atol=1e-5)
        assert not torch.allclose(injected, plain, atol=1e-3)
    finally:
        sd1.load_model()  # ComfyUI swaps the clone out (ejects) when the plain CLIP is loaded again
    assert not original
    torch.testing.assert_close(pack_sd1_tokens(state, bridge, sd1), plain, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- fingerprints
def test_fingerprint_covers_wrappers_and_object_patches_and_reads_no_meta_tensor(state, pack, sd1, bridge):
    base = sd1.clone()
    fingerprint = bridge.open_clip(state, base).encoders["l"].fingerprint
    assert bridge.open_clip(state, base.clone()).encoders["l"].fingerprint == fingerprint  # a plain clone encodes the same

    wrapped = base.clone()
    wrapped.patcher.add_weight_wrapper("clip_l.transformer.text_model.final_layer_norm.weight", lambda weight: weight * 2)
    assert bridge.open_clip(state, wrapped).encoders["l"].fingerprint != fingerprint
    patched = base.clone()
    patched.patcher.add_object_patch("clip_l.encode_token_weights", lambda pairs: None)
    assert bridge._fingerprint(patched, "clip_l", patched.cond_stage_model.clip_l, "shift0|projectedTrue", state.identities) != fingerprint

    digest = hashlib.sha256()
    meta = torch.empty(49408, 768, device="meta")
    token = state.identities.token  # what the bridge passes for unreadable tensors
    drum_core.fingerprint.update_tensor(digest, meta, token)  # no values are read off the meta device
    again = hashlib.sha256()
    drum_core.fingerprint.update_tensor(again, meta, token)
    other = hashlib.sha256()
    drum_core.fingerprint.update_tensor(other, torch.empty(49408, 768, device="meta"), token)
    assert digest.hexdigest() == again.hexdigest() != other.hexdigest()  # the same tensor, never another one's values


class SlottedHook:
    __slots__ = ("n",)  # cannot be weakly referenced: the identity registry keeps it alive, within its bound

    def __init__(self, n):
        self.n = n


def test_many_patched_clip_objects_do_not_grow_the_identity_registry(state, pack, sd1, bridge, monkeypatch):
    identities = state.identities  # the registry of the pack's state
    monkeypatch.setattr(identities, "limit", 8)

    def fingerprint_a_patched_clone(n):
        patched = sd1.clone()
        patched.patcher.add_object_patch("clip_l.drum_test_hook", lambda pairs, n=n: n)  # tokenized by identity
        patched.patcher.add_object_patch("clip_l.drum_test_slotted", SlottedHook(n))
        return bridge._fingerprint(patched, "clip_l", patched.cond_stage_model.clip_l, "shift0|projectedTrue", identities)

    fingerprint_a_patched_clone(-1)
    gc.collect()
    before = len(identities)
    keys = {fingerprint_a_patched_clone(n) for n in range(200)}
    gc.collect()
    assert len(keys) == 200  # each clone's patches count
    assert identities.kept_alive <= 8 and len(identities) <= before + 8  # the lambdas left with their CLIP objects


# ---------------------------------------------------------------------- execution as the core does it
def test_encoders_run_in_comfyui_device_context_on_the_load_device(state, pack, sd1, bridge, monkeypatch):
    """Where comfy.model_management has cuda_device_context (newer ComfyUI), every encode runs inside it."""
    import contextlib

    import comfy.model_management

    entered = []

    @contextlib.contextmanager
    def cuda_device_context(device):
        entered.append(torch.device(device))
        yield

    monkeypatch.setattr(comfy.model_management, "cuda_device_context", cuda_device_context, raising=False)
    tokens = pack_sd1_tokens(state, bridge, sd1)
    assert entered and set(entered) == {torch.device(sd1.patcher.load_device)}
    assert tokens.dtype == torch.float32
    module = sd1.cond_stage_model.clip_l
    assert (module.layer, module.layer_idx, getattr(module, "execution_device", None)) == ("last", None, None)


# ---------------------------------------------------------------------- adapters under model management
def test_adapters_are_managed_by_comfyui_and_cached_histories_are_offloaded(state, pack, sd1, bridge):
    import comfy.model_management

    adapter = tiny_adapter("L", seed=4)
    run_conditioner(pack, sd1, {"L": adapter})
    patcher = node_module("adapters").model_patcher(state, adapter)  # the one the run made, kept in the adapter's state entry
    assert patcher.model.adapter is adapter and patcher.load_device == comfy.model_management.text_encoder_device()
    assert patcher.offload_device == comfy.model_management.text_encoder_offload_device()
    assert any(loaded.model is patcher for loaded in comfy.model_management.current_loaded_models)
    offload = torch.device(comfy.model_management.text_encoder_offload_device())
    cached = next(p for p in state.personalizers.values() if p.adapters.get("l") is adapter)
    assert cached._reference_states and all(
        t.device == offload for kept in cached._reference_states.values() for t in (*kept.keys, *kept.values)
    )
    assert len(state.personalizers) <= state.personalizers.limit


def test_adapter_file_cache_is_bounded(state, pack, tmp_path, monkeypatch):
    import folder_paths

    adapters = node_module("adapters")
    state.adapters.clear()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "drum", ([str(tmp_path)], {".safetensors"}))  # this test's folder only
    names = [f"bounded_{i}_L.safetensors" for i in range(state.adapters.limit + 2)]
    for i, name in enumerate(names):
        tiny_adapter("L", seed=60 + i, layers=1).save(tmp_path / name)
    first = adapters.load_adapter(state, names[0], "L")
    for name in names[1:]:
        adapters.load_adapter(state, name, "L")
    assert len(state.adapters) == state.adapters.limit == node_module("state").ADAPTERS_KEPT
    assert str(tmp_path / names[-1]) in state.adapters and str(tmp_path / names[0]) not in state.adapters
    assert adapters.load_adapter(state, names[0], "L") is not first  # evicted, read again
