"""Memory order: a CLIP LoRA is still in the history's encodings when ComfyUI unloads everything it can at every load.

ComfyUI unloads the other models when a load needs memory (comfy.model_management.free_memory); unloading the
CLIP restores its original weights (weight-patch LoRAs) and ejects its injections (bypass LoRAs). Here each
load_models_gpu call unloads every model it does not itself bring in.
"""

import pytest
import torch
from support.comfy_env import node_module
from support.tiny_models import bypass_lora, tiny_adapter, tiny_clip

pytestmark = pytest.mark.comfy

TEXT = "a lighthouse on a cliff at dusk"
HISTORY = "watercolor of a harbour\nink sketch of a fox\noil painting of a storm at sea\n"


@pytest.fixture(scope="module")
def adapters(pack, tmp_path_factory):
    """The module's own L adapter, from a drum folder registered for this module only."""
    import folder_paths

    folder = tmp_path_factory.mktemp("drum_memory")
    tiny_adapter("L", seed=61).save(folder / "memory_L.safetensors")
    folder_paths.add_model_folder_path("drum", str(folder))
    yield pack["DrUMPeCALoader"].execute("memory_L.safetensors", "none", "none", "none").args[0]
    # ComfyUI's folder list is process-wide: leave no adapter behind for later modules' `auto` slots
    folder_paths.folder_names_and_paths["drum"][0].remove(str(folder))


@pytest.fixture
def no_free_memory(monkeypatch):
    """Every load_models_gpu call first frees ALL memory it may (ComfyUI's own free_memory, keeping only the models of
    that call): what a full GPU does. On the CPU ComfyUI never frees memory, so this does it on the models' device."""
    import comfy.model_management as mm

    load = mm.load_models_gpu

    def pressured(models, *args, **kwargs):
        keep = [loaded for loaded in mm.current_loaded_models if loaded.model in models]
        for device in {loaded.device for loaded in mm.current_loaded_models}:
            mm.free_memory(float("inf"), device, keep_loaded=keep)
        return load(models, *args, **kwargs)

    monkeypatch.setattr(mm, "load_models_gpu", pressured)


def weight_patch_lora(clip, seed):
    """A CLIP LoRA as ComfyUI's LoraLoader leaves it: weight patches on the clone's patcher."""
    lora = clip.clone()
    key = "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
    delta = torch.randn(lora.cond_stage_model.state_dict()[key].shape, generator=torch.Generator().manual_seed(seed)) * 0.5
    assert lora.add_patches({key: ("diff", (delta,))}, 1.0) == [key]
    return lora


def comfy_encode(clip, prompt):
    """ComfyUI's own CLIP Text Encode of `prompt` (tokens [1, 77, 768]): loads the CLIP with its LoRA."""
    return clip.encode_from_tokens(clip.tokenize(prompt))


@pytest.mark.parametrize("make_lora", [weight_patch_lora, bypass_lora], ids=["weight-patch", "bypass"])
def test_the_lora_stays_in_the_history_encodings_under_memory_pressure(state, pack, adapters, no_free_memory, make_lora):
    import comfy.model_management

    bridge = node_module("clip_bridge")
    clip = tiny_clip("sd1", seed=60)
    lora = make_lora(clip, seed=62)
    prompts = [line for line in HISTORY.splitlines() if line]
    expected = [comfy_encode(lora, prompt)[0] for prompt in prompts]  # independent: ComfyUI's encode with the LoRA applied
    plain = [comfy_encode(clip, prompt)[0] for prompt in prompts]
    assert all(not torch.allclose(e, p, atol=1e-3) for e, p in zip(expected, plain))  # the LoRA matters

    bridge.prepare(lora)  # the pressure is real: loading the adapters now unloads the CLIP (and its LoRA)
    node_module("adapters").load_to_device(state, [a for a in adapters.slots.values() if not isinstance(a, str)])
    assert not any(loaded.model is lora.patcher for loaded in comfy.model_management.current_loaded_models)

    history = pack["DrUMHistoryLoader"].execute("none", HISTORY).args[0]
    before = state.embeddings.computed
    pack["DrUMConditioner"].execute(lora, adapters, history, TEXT, 0.3)
    assert state.embeddings.computed - before >= len(prompts)  # the history was encoded in this run, not served
    encoder = bridge.open_clip(state, lora).encoders["l"]  # loaded (LoRA applied) as during the run: the same cache key
    layer = -1  # the SD1 family's token layer (no CLIP Set Last Layer)
    computed = state.embeddings.computed
    cached = state.embeddings.encode(encoder, prompts, (layer,)).states[layer]  # what the conditioner's references used
    assert state.embeddings.computed == computed  # read back from the cache, not encoded again now
    for row, prompt in enumerate(prompts):
        ours = encoder.final_norm(cached[row : row + 1]).float()
        assert (ours - expected[row].float()).abs().max() <= 1e-5, prompt  # the LoRA is in the history's encodings
        assert (ours - plain[row].float()).abs().max() > 1e-3, prompt
