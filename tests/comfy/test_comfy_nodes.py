"""The nodes one by one on a random-weight SD1 / SDXL CLIP: inputs, errors, caching, progress."""

import pytest
import torch
import torch.utils._pytree as pytree
from safetensors.torch import save_file
from support.comfy_env import node_module
from support.tiny_models import tiny_adapter, tiny_clip
from torch.utils._python_dispatch import TorchDispatchMode

import drum_core.history
import drum_core.personalizer

pytestmark = pytest.mark.comfy

TEXT = "a lighthouse on a cliff at dusk"
HISTORY_TEXT = "watercolor of a harbour\t2\nink sketch of a fox\t0.5\noil painting of a storm at sea\nmisty pine forest, soft light\n"


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny_clip("sd1", seed=10)


@pytest.fixture(scope="module")
def sdxl(pack):
    return tiny_clip("sdxl", seed=11)


@pytest.fixture(scope="module")
def drum_folder(pack, tmp_path_factory):
    """A drum model folder with tiny adapters named like the published files (+ a T5 file under a wrong name)."""
    import folder_paths

    folder = tmp_path_factory.mktemp("drum")
    for i, name in enumerate(("L", "bigG", "T5")):
        tiny_adapter(name, seed=20 + i).save(folder / f"tiny_{name}.safetensors")
    tiny_adapter("T5", seed=30).save(folder / "looks_like_L.safetensors")
    folder_paths.add_model_folder_path("drum", str(folder))
    return folder


@pytest.fixture
def input_folder(pack, tmp_path):
    import folder_paths

    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_input_directory(previous)


def load_adapters(pack, L="auto", H="auto", bigG="auto", T5="auto"):
    return pack["DrUMPeCALoader"].execute(L, H, bigG, T5).args[0]


def pasted(pack, text=HISTORY_TEXT):
    return pack["DrUMHistoryLoader"].execute("none", text).args[0]


def condition(pack, clip, adapters, history, degree=0.3, base=None, degrees=None, text=TEXT):
    return pack["DrUMConditioner"].execute(clip, adapters, history, text, degree, base, degrees).args[0]


# ---------------------------------------------------------------------- history loader
def test_history_loader_reads_input_folder_files_and_pasted_text(pack, input_folder):
    (input_folder / "user.txt").write_text(HISTORY_TEXT)
    loader = pack["DrUMHistoryLoader"]
    file_input = loader.GET_SCHEMA().inputs[0]
    assert "user.txt" in file_input.options
    assert file_input.as_dict()["drum_history_extensions"] == list(drum_core.history.HISTORY_EXTENSIONS)  # what the page reads
    out = loader.execute("user.txt", "")
    assert out.args[0].history.prompts[0] == "watercolor of a harbour" and out.args[0].history.intensities[:2] == (2.0, 0.5)
    ui = out.ui["drum_history"][0]
    assert ui["count"] == 4 and ui["source"] == "user.txt" and ui["preview"][1] == {"prompt": "ink sketch of a fox", "weight": 0.5}
    assert pasted(pack, "one\ntwo\n").history.prompts == ("one", "two")
    assert len(pasted(pack, "").history) == 0  # no file, no text: empty history
    before = loader.fingerprint_inputs("user.txt", "")
    (input_folder / "user.txt").write_text(HISTORY_TEXT + "a new prompt\n")
    assert loader.fingerprint_inputs("user.txt", "") != before


def test_history_loader_rejects_paths_outside_the_input_folder(pack, input_folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("secret prompt\n")
    loader = pack["DrUMHistoryLoader"]
    for name in (str(outside), "../secret.txt", "sub/../../secret.txt"):
        message = loader.validate_inputs(file=name, text="")
        assert isinstance(message, str) and "input folder" in message, name
    (input_folder / "link.txt").symlink_to(outside)
    assert "outside" in loader.validate_inputs(file="link.txt", text="")
    assert "not found" in loader.validate_inputs(file="missing.txt", text="")


def test_malformed_history_file_raises_a_history_error(pack, input_folder):
    HistoryError = drum_core.history.HistoryError
    (input_folder / "empty.txt").write_text("\n\n")
    (input_folder / "bad.json").write_text("{not json")
    for name in ("empty.txt", "bad.json"):
        with pytest.raises(HistoryError, match=name):
            pack["DrUMHistoryLoader"].execute(name, "")


# ---------------------------------------------------------------------- adapters
def test_auto_adapters_follow_the_clip_encoders(pack, sd1, sdxl, drum_folder):
    adapters = load_adapters(pack)
    assert condition(pack, sd1, adapters, pasted(pack))[0][0].shape == (1, 77, 768)
    assert condition(pack, sdxl, adapters, pasted(pack))[0][0].shape == (1, 77, 2048)


class TensorWork(TorchDispatchMode):
    """Records every torch operation on a real (not meta) tensor run inside it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if any(t.device.type != "meta" for t in tensors):
            self.ops.append(str(func))
        return out


def test_adapter_validation_reads_headers_and_runs_no_tensor_operation(pack, drum_folder):
    """ComfyUI validates on its server thread; a torch operation there slows every later run (docs/comfyui.md)."""
    loader = pack["DrUMPeCALoader"]
    partial = drum_folder / "partial.safetensors"
    tensors = {k: v.float() for k, v in tiny_adapter("L").state_dict().items() if k != "tf.1.attn.key.weight"}
    save_file(tensors, str(partial))
    try:
        with TensorWork() as work:
            valid = loader.validate_inputs(L="tiny_L.safetensors", H="none", bigG="tiny_bigG.safetensors", T5="tiny_T5.safetensors")
            wrong_slot = loader.validate_inputs(L="looks_like_L.safetensors", H="auto", bigG="auto", T5="auto")
            incomplete = loader.validate_inputs(L="partial.safetensors", H="auto", bigG="auto", T5="auto")
    finally:
        partial.unlink()
    assert valid is True
    assert "L slot" in wrong_slot and "made for the T5 encoder" in wrong_slot
    assert "partial.safetensors" in incomplete and "missing keys: tf.1.attn.key.weight" in incomplete
    assert work.ops == []


def test_missing_or_wrong_adapters_are_named_errors(pack, sd1, sdxl, drum_folder, tmp_path):
    AdapterMismatchError = drum_core.personalizer.AdapterMismatchError
    loader = pack["DrUMPeCALoader"]
    message = loader.validate_inputs(L="looks_like_L.safetensors", H="auto", bigG="auto", T5="auto")
    assert "L slot" in message and "T5" in message
    assert "not found" in loader.validate_inputs(L="gone.safetensors", H="auto", bigG="auto", T5="auto")
    assert loader.validate_inputs(L="tiny_L.safetensors", H="none", bigG="tiny_bigG.safetensors", T5="auto") is True
    with pytest.raises(AdapterMismatchError, match="bigG slot is 'none'"):
        condition(pack, sdxl, load_adapters(pack, bigG="none"), pasted(pack))
    AdapterChoice = node_module("io_types").AdapterChoice
    swapped = AdapterChoice({"L": tiny_adapter("bigG"), "H": "none", "bigG": "none", "T5": "none"})
    with pytest.raises(AdapterMismatchError, match="width 1280.*'l'.*width 768"):
        condition(pack, sd1, swapped, pasted(pack))
    import folder_paths

    paths = folder_paths.folder_names_and_paths["drum"][0]
    folder_paths.folder_names_and_paths["drum"] = ([str(tmp_path)], {".safetensors"})  # an empty drum folder
    try:
        with pytest.raises(AdapterMismatchError, match="no L adapter for 'auto'.*L.safetensors"):
            condition(pack, sd1, load_adapters(pack), pasted(pack))
    finally:
        folder_paths.folder_names_and_paths["drum"] = (paths, {".safetensors"})


# ---------------------------------------------------------------------- conditioner
def test_extras_are_carried_over_and_inputs_never_mutated(pack, sdxl, drum_folder):
    pooled = torch.zeros(1, 1280)
    base = [
        [
            torch.zeros(1, 77, 2048),
            {"pooled_output": pooled, "width": 1024, "height": 768, "crop_w": 0, "target_width": 2048, "guidance": 4.0},
        ]
    ]
    snapshot = {k: v for k, v in base[0][1].items()}
    out = condition(pack, sdxl, load_adapters(pack), pasted(pack), base=base)
    extras = out[0][1]
    assert {k: extras[k] for k in ("width", "height", "crop_w", "target_width", "guidance")} == {
        "width": 1024,
        "height": 768,
        "crop_w": 0,
        "target_width": 2048,
        "guidance": 4.0,
    }
    assert extras["pooled_output"].shape == (1, 1280) and not torch.equal(extras["pooled_output"], pooled)
    assert base[0][1] == snapshot and base[0][1]["pooled_output"] is pooled and torch.count_nonzero(pooled) == 0
    assert extras is not base[0][1]


def test_clip_clones_are_never_modified(pack, sd1, drum_folder):
    clip = sd1.clone()
    clip.clip_layer(-2)
    model = clip.cond_stage_model.clip_l
    options = (model.layer, model.layer_idx, model.return_projected_pooled, dict(clip.tokenizer_options), clip.layer_idx)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    condition(pack, clip, load_adapters(pack), pasted(pack))
    assert (model.layer, model.layer_idx, model.return_projected_pooled, dict(clip.tokenizer_options), clip.layer_idx) == options
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert sd1.layer_idx is None and sd1.tokenizer_options == {}


def test_clip_lora_patches_are_honoured_and_stay_on_their_clone(pack, sd1, drum_folder):
    adapters, history = load_adapters(pack), pasted(pack)
    plain = condition(pack, sd1, adapters, history)[0][0]
    lora = sd1.clone()
    key = "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
    delta = torch.randn(lora.cond_stage_model.state_dict()[key].shape, generator=torch.Generator().manual_seed(5)) * 0.5
    assert lora.add_patches({key: ("diff", (delta,))}, 1.0) == [key]  # what a CLIP LoRA loader does
    patched = condition(pack, lora, adapters, history)[0][0]
    assert not torch.allclose(plain, patched, atol=1e-3)  # new weights, new encodings (not served from the cache)
    torch.testing.assert_close(condition(pack, sd1, adapters, history)[0][0], plain, rtol=0, atol=1e-5)


def test_clip_set_last_layer_is_honoured(state, pack, sd1, drum_folder):
    from nodes import CLIPSetLastLayer

    adapters, history = load_adapters(pack), pasted(pack)
    (penultimate,) = CLIPSetLastLayer().set_last_layer(sd1, -2)
    last = condition(pack, sd1, adapters, history, degree=0.0)[0][0]
    second = condition(pack, penultimate, adapters, history, degree=0.0)[0][0]
    bridge = node_module("clip_bridge")
    encoder = bridge.open_clip(state, sd1).encoders["l"]
    adapter = node_module("adapters").load_adapter(state, "tiny_L.safetensors", "L")
    with torch.inference_mode():
        tokens, _ = adapter(encoder.empty_query(), encoder.hidden_states([TEXT], -2))
    torch.testing.assert_close(second, encoder.final_norm(tokens), rtol=0, atol=1e-5)
    assert not torch.allclose(last, second, atol=1e-3)


def test_degree_sweep_gives_one_condition_per_degree(pack, sd1, drum_folder):
    degrees, batch = pack["DrUMDegreeSlider"].execute(0.3, True, 0.0, 1.0, 3).args
    assert degrees.values == (0.0, 0.5, 1.0) and batch == 3
    adapters, history = load_adapters(pack), pasted(pack)
    sweep = condition(pack, sd1, adapters, history, degrees=degrees)
    assert sweep[0][0].shape == (3, 77, 768) and sweep[0][1]["pooled_output"].shape == (3, 768)
    for row, value in enumerate(degrees.values):
        single = condition(pack, sd1, adapters, history, degree=value)
        torch.testing.assert_close(sweep[0][0][row], single[0][0][0], rtol=0, atol=1e-4)
    assert pack["DrUMDegreeSlider"].execute(0.7, False, 0.0, 1.0, 3).args == (node_module("io_types").Degrees((0.7,)), 1)


def test_history_mix_sweep_gives_one_history_per_mix_as_a_list(pack):
    """The History Mix's output is a list (ComfyUI runs each node after it once per item): in sweep mode one history per
    mix from start to end, each exactly mix_histories at that mix; otherwise a list of the one mix."""
    mix = pack["DrUMHistoryMix"]
    (output,) = mix.define_schema().outputs
    assert output.is_output_list
    a = pasted(pack)
    b = pasted(pack, "woodblock print of a wave\t3\nink sketch of a fox\t1\nukiyo-e mountain pass\t2\n")
    result = mix.execute(a, b, 0.3, True, 0.0, 1.0, 3)
    (mixed,) = result.args
    assert [type(h).__name__ for h in mixed] == ["DrumHistory"] * 3
    for history, t in zip(mixed, (0.0, 0.5, 1.0)):
        expected = drum_core.history.mix_histories(a.history, b.history, t)
        assert history.history.prompts == expected.prompts and history.history.intensities == expected.intensities
    assert mixed[0].history is a.history and mixed[2].history is b.history  # the ends are the sides themselves
    assert [entry["mix"] for entry in result.ui["drum_history"]] == [0.0, 0.5, 1.0]
    assert [entry["count"] for entry in result.ui["drum_history"]] == [4, 6, 3]  # the shared fox is kept once
    (single,) = mix.execute(a, b, 0.3).args[0]  # no sweep: the widget's mix, as a list of one
    assert single.history.intensities == drum_core.history.mix_histories(a.history, b.history, 0.3).intensities
    with pytest.raises(node_module("checked").DrUMInputError, match="DrUM History Mix: count = 17 is above its maximum 16"):
        mix.execute(a, b, 0.3, True, 0.0, 1.0, 17)  # a linked count is checked like a typed one


def test_the_conditioner_gives_the_degrees_it_used_to_the_profile_preview(pack, sd1, drum_folder):
    """The Conditioner's second output is the alpha(s) of its conditioning: its own 'degree' widget, or the linked
    degrees that override it; linked to the Profile Preview, the map and the picture name exactly those."""
    Degrees = node_module("io_types").Degrees
    adapters, history = load_adapters(pack), pasted(pack)
    conditioner = pack["DrUMConditioner"]
    own = conditioner.execute(sd1, adapters, history, TEXT, 0.45).args
    assert own[1] == Degrees((0.45,)) and type(own[1].values[0]) is float
    sweep = pack["DrUMDegreeSlider"].execute(0.3, True, 0.0, 1.0, 3).args[0]
    linked = conditioner.execute(sd1, adapters, history, TEXT, 0.45, None, sweep).args
    assert linked[1] == sweep and linked[0][0][0].shape[0] == 3  # the widget is overridden: the output says so too
    picked = pack["DrUMCoresetSampler"].execute(history, sd1, 0.5, 0, 10, 42).args[0]
    shown = pack["DrUMProfilePreview"].execute(picked, 512, 256, None, own[1])
    assert shown.ui["drum_map"][0]["degrees"] == [0.45]
    other = pack["DrUMProfilePreview"].execute(picked, 512, 256, None, Degrees((0.3,)))
    assert not torch.equal(shown.args[0], other.args[0])  # the picture's legend says the alpha


def test_history_is_encoded_once_then_reused(state, pack, sd1, drum_folder):
    adapters, history = load_adapters(pack), pasted(pack, "prompt one for caching\nprompt two for caching\n")
    condition(pack, sd1, adapters, history, degree=0.3)
    computed = state.embeddings.computed
    state.personalizers.clear()  # even a rebuilt Personalizer finds the states in the cache
    condition(pack, sd1, adapters, history, degree=0.8, text="another target entirely")
    assert state.embeddings.computed == computed


def test_progress_is_reported_and_interruption_stops_encoding(pack, sd1, drum_folder):
    import comfy.model_management
    import comfy.utils

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        condition(pack, sd1, load_adapters(pack), pasted(pack, "progress prompt a\nprogress prompt b\nprogress prompt c\n"))
        assert calls and calls[-1][0] == calls[-1][1] == 3
        comfy.model_management.interrupt_current_processing(True)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            condition(pack, sd1, load_adapters(pack), pasted(pack, "interrupted prompt a\ninterrupted prompt b\n"))
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(None)


# ---------------------------------------------------------------------- coreset and preview
def test_coreset_sampler_and_profile_preview(pack, sd1):
    prompts = [f"prompt number {i} about {topic}" for i, topic in enumerate(["cats", "dogs", "boats", "trees"] * 5)]
    history = pasted(pack, "\n".join(prompts))
    out = pack["DrUMCoresetSampler"].execute(history, sd1, 0.1, 0, 10, 42)
    picked = out.args[0]
    assert len(picked.history) == 2 and set(picked.history.prompts) <= set(prompts)
    assert picked.profile.features.shape == (20, 768) and len(picked.profile.picks) == 2
    assert [p["prompt"] for p in out.ui["drum_picks"]] == list(picked.history.prompts)
    capped = pack["DrUMCoresetSampler"].execute(history, sd1, 1.0, 3, 10, 42).args[0]
    assert len(capped.history) == 3 and capped.history.prompts[:2] == picked.history.prompts  # same greedy order
    image = pack["DrUMProfilePreview"].execute(picked, 512, 256).args[0]
    assert image.shape == (1, 256, 512, 3) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert image.std() > 0.01
    with pytest.raises(ValueError, match="connect a DrUM Coreset Sampler"):
        pack["DrUMProfilePreview"].execute(history, 512, 256)
    assert pack["DrUMProfilePreview"].execute(history, 512, 256, sd1).args[0].shape == (1, 256, 512, 3)
    plain = pack["DrUMProfilePreview"].execute(picked, 512, 256)
    assert plain.ui["drum_map"][0]["degrees"] is None
    sweep = pack["DrUMDegreeSlider"].execute(0.3, True, 0.0, 0.9, 4).args[0]  # the slider's output, as linked
    named = pack["DrUMProfilePreview"].execute(picked, 512, 256, None, sweep)
    assert named.ui["drum_map"][0]["degrees"] == pytest.approx([0.0, 0.3, 0.6, 0.9], abs=1e-12)
    assert not torch.equal(named.args[0], plain.args[0])  # the legend names the degrees
    assert torch.equal(named.args[0][:, :, :200], plain.args[0][:, :, :200])  # the map itself is the same


def test_sdxl_clip_l_features_ignore_its_unloaded_text_projection(state, pack, drum_folder):
    """SDXL checkpoints carry no CLIP-L text projection (ComfyUI leaves it uninitialized): the coreset features of that
    encoder are its final-LayerNorm EOS states, unprojected (as diffusers' CLIPTextModel gives them), never garbage."""
    clip = tiny_clip("sdxl", seed=12)
    with torch.no_grad():
        clip.cond_stage_model.clip_l.transformer.text_projection.weight.fill_(float("nan"))
    bridge = node_module("clip_bridge")
    bridge.prepare(clip)
    encoder = bridge.open_clip(state, clip).encoders["l"]
    prompts = ["watercolor of a harbour", "ink sketch of a fox"]
    eos = encoder.encode(prompts, (), eos=True).eos
    features = encoder.pooled_features(prompts)
    norm = clip.cond_stage_model.clip_l.transformer.text_model.final_layer_norm
    expected = torch.nn.functional.layer_norm(eos.double(), norm.weight.shape, norm.weight.double(), norm.bias.double(), norm.eps)
    torch.testing.assert_close(features.double(), expected, rtol=1e-5, atol=1e-5)
    picked = pack["DrUMCoresetSampler"].execute(pasted(pack), clip, 0.5, 0, 10, 42).args[0]
    assert len(picked.history) == 2
    cond = condition(pack, clip, load_adapters(pack), picked)
    assert torch.isfinite(cond[0][0]).all() and torch.isfinite(cond[0][1]["pooled_output"]).all()
