"""The conditioner's `relevant` and timestep range, and DrUM Profile Save / Load, on real comfy.sd.CLIP objects."""

import math

import pytest
import torch
from support.comfy_env import node_module
from support.tiny_models import tiny_adapter, tiny_clip

pytestmark = pytest.mark.comfy

TEXT = "a red fox in the snow, morning light"
PROMPTS = [
    "watercolor of a lighthouse",
    "oil painting of mountains at dusk",
    "ink sketch of a sleeping cat",
    "a fox in a snowy forest, watercolor",
    "neon city street at night",
    "a red fox portrait, morning",
]
INTENSITIES = [1.0, 2.0, 0.5, 1.5, 3.0, 0.25]


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny_clip("sd1", seed=40)


@pytest.fixture(scope="module")
def adapters(pack):
    io_types = node_module("io_types")
    return io_types.AdapterChoice({"L": tiny_adapter("L", seed=41)}, {"L": "L (test)"})


@pytest.fixture
def profiles_folder(pack, tmp_path, monkeypatch):
    """The drum_profiles folder pointed at a temporary folder for one test."""
    import folder_paths

    folder = tmp_path / "drum_profiles"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "drum_profiles", ([str(folder)], {".safetensors"}))
    return folder


def pasted(pack, prompts=PROMPTS, intensities=INTENSITIES):
    text = "\n".join(f"{p}\t{w}" for p, w in zip(prompts, intensities))
    return pack["DrUMHistoryLoader"].execute("none", text).args[0]


def coreset(pack, clip, history, ratio=1.0):
    return pack["DrUMCoresetSampler"].execute(history, clip, ratio, 0, 10, 42).args[0]


def condition(pack, clip, adapters, history, degree=0.4, **options):
    return pack["DrUMConditioner"].execute(clip, adapters, history, TEXT, degree, **options).args[0]


def cosine_top(query, rows, count):
    """Literal restatement in float64: indices of the `count` rows of highest cosine (ties: lower index), ascending."""
    q = [float(v) for v in query]
    scored = []
    for i, row in enumerate(rows.tolist()):
        dot = sum(a * b for a, b in zip(row, q))
        scored.append((-dot / (math.sqrt(sum(a * a for a in row)) * math.sqrt(sum(b * b for b in q))), i))
    return sorted(i for _, i in sorted(scored)[:count])


# ---------------------------------------------------------------------- relevant
def test_relevant_uses_the_most_similar_references_without_encoding_the_history_again(state, pack, sd1, adapters, monkeypatch):
    caches = node_module("caches")
    picked = coreset(pack, sd1, pasted(pack))  # ratio 1: every prompt, in pick order, with the profile's features
    condition(pack, sd1, adapters, picked)  # encodes the references' states once
    encoded = state.embeddings.computed
    encoder_type = node_module("clip_bridge").ComfySubEncoder
    tokenized, passes = encoder_type._chunks, []  # every encoder pass over a prompt tokenizes it first

    def counted(self, prompt):
        passes.append(prompt)
        return tokenized(self, prompt)

    monkeypatch.setattr(encoder_type, "_chunks", counted)
    got = condition(pack, sd1, adapters, picked, relevant=2)
    assert passes.count(TEXT) == 1  # the prompt is encoded once: the panel's pick is the Personalizer's, not re-derived
    monkeypatch.undo()
    assert state.embeddings.computed == encoded  # pooled features came from the coreset profile
    encoder = caches.first_clip_encoder(node_module("clip_bridge").open_clip(state, sd1))
    features = picked.profile.features_of(picked.history.prompts, encoder.fingerprint)
    chosen = cosine_top(encoder.pooled_features([TEXT])[0], features, 2)
    subset = pasted(pack, [picked.history.prompts[i] for i in chosen], [picked.history.intensities[i] for i in chosen])
    expected = condition(pack, sd1, adapters, subset)
    assert len(got) == 1 and set(got[0][1]) == set(expected[0][1])
    torch.testing.assert_close(got[0][0], expected[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0][1]["pooled_output"], expected[0][1]["pooled_output"], rtol=1e-5, atol=1e-5)
    panel = pack["DrUMConditioner"].execute(sd1, adapters, picked, TEXT, 0.4, relevant=2).ui["drum_conditioning"][0]["references"]
    assert [row["prompt"] for row in panel] == [picked.history.prompts[i] for i in chosen]  # the panel lists the ones used
    everything = condition(pack, sd1, adapters, picked)
    assert torch.equal(condition(pack, sd1, adapters, picked, relevant=6)[0][0], everything[0][0])  # m >= R: all
    assert not torch.allclose(got[0][0], everything[0][0])


def test_relevant_on_a_loader_history_takes_the_features_from_the_references_encoder_pass(state, pack, sd1, adapters):
    caches = node_module("caches")
    history = pasted(pack, [f"{p}, variant" for p in PROMPTS])
    before = state.embeddings.computed
    first = condition(pack, sd1, adapters, history, relevant=3)
    assert state.embeddings.computed == before + len(PROMPTS)  # each history prompt through the encoder once
    encoder = caches.first_clip_encoder(node_module("clip_bridge").open_clip(state, sd1))
    features = state.embeddings.pooled_features(encoder, history.history.prompts)  # cached by that same pass
    assert state.embeddings.computed == before + len(PROMPTS)
    chosen = cosine_top(encoder.pooled_features([TEXT])[0], features, 3)
    subset = pasted(pack, [history.history.prompts[i] for i in chosen], [history.history.intensities[i] for i in chosen])
    torch.testing.assert_close(first[0][0], condition(pack, sd1, adapters, subset)[0][0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- timestep range
def test_full_range_is_the_single_entry_output(pack, sd1, adapters):
    history = pasted(pack)
    old = condition(pack, sd1, adapters, history)
    new = condition(pack, sd1, adapters, history, relevant=0, start_percent=0.0, end_percent=1.0)
    assert len(old) == len(new) == 1 and "start_percent" not in new[0][1] and set(old[0][1]) == set(new[0][1])
    assert torch.equal(old[0][0], new[0][0]) and torch.equal(old[0][1]["pooled_output"], new[0][1]["pooled_output"])


def test_a_range_is_what_comfyuis_timestep_range_and_combine_nodes_build(pack, sd1, adapters):
    import nodes as comfy_nodes

    history = pasted(pack)
    personalized = condition(pack, sd1, adapters, history)
    plain = comfy_nodes.CLIPTextEncode().encode(sd1, TEXT)[0]
    set_range, combine = comfy_nodes.ConditioningSetTimestepRange(), comfy_nodes.ConditioningCombine()
    expected = combine.combine(set_range.set_range(personalized, 0.3, 0.8)[0], set_range.set_range(plain, 0.0, 0.3)[0])[0]
    expected = combine.combine(expected, set_range.set_range(plain, 0.8, 1.0)[0])[0]
    got = condition(pack, sd1, adapters, history, start_percent=0.3, end_percent=0.8)
    assert len(got) == len(expected) == 3
    for (tokens, extras), (want_tokens, want_extras) in zip(got, expected):
        assert torch.equal(tokens, want_tokens)
        assert set(extras) == set(want_extras) and extras["start_percent"] == want_extras["start_percent"]
        assert extras["end_percent"] == want_extras["end_percent"]
        assert torch.equal(extras["pooled_output"], want_extras["pooled_output"])
    starting = condition(pack, sd1, adapters, history, start_percent=0.0, end_percent=0.5)
    assert [(e["start_percent"], e["end_percent"]) for _, e in starting] == [(0.0, 0.5), (0.5, 1.0)]  # no empty plain range


def test_an_empty_range_is_a_named_error(pack, sd1, adapters):
    node = pack["DrUMConditioner"]
    assert node.validate_inputs(start_percent=0.2, end_percent=0.7) is True
    assert "start_percent (0.6) must be below end_percent (0.4)" in node.validate_inputs(start_percent=0.6, end_percent=0.4)
    assert "must lie in [0, 1]" in node.validate_inputs(start_percent=-0.1, end_percent=0.4)
    with pytest.raises(ValueError, match=r"DrUM Conditioner: start_percent \(0.5\) must be below end_percent \(0.5\)"):
        condition(pack, sd1, adapters, pasted(pack), start_percent=0.5, end_percent=0.5)


# ---------------------------------------------------------------------- profile save / load
def test_saved_profile_loads_to_the_same_history_features_and_conditioning(pack, sd1, adapters, profiles_folder):
    picked = coreset(pack, sd1, pasted(pack), ratio=0.5)
    out = pack["DrUMProfileSave"].execute(picked, "alice/taste", sd1)
    assert out.ui["drum_profile"] == [{"file": "alice/taste.safetensors", "count": 6, "picks": 3}]
    assert (profiles_folder / "alice" / "taste.safetensors").is_file()
    load = pack["DrUMProfileLoad"]
    assert "alice/taste.safetensors" in load.GET_SCHEMA().inputs[0].options
    assert load.validate_inputs(file="alice/taste.safetensors") is True
    loaded, full = load.execute("alice/taste.safetensors", sd1).args
    assert loaded.history.prompts == picked.history.prompts and loaded.history.intensities == picked.history.intensities
    assert full.history.prompts == tuple(PROMPTS) and loaded.profile.picks == picked.profile.picks
    assert torch.equal(loaded.profile.features, picked.profile.features)
    assert loaded.profile.fingerprint == picked.profile.fingerprint
    for options in ({}, {"relevant": 2}):
        a, b = condition(pack, sd1, adapters, picked, **options), condition(pack, sd1, adapters, loaded, **options)
        assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])
    assert pack["DrUMProfilePreview"].execute(loaded, 512, 256).args[0].std() > 0.01


def test_another_clip_re_encodes_the_features(state, pack, sd1, profiles_folder):
    picked = coreset(pack, sd1, pasted(pack), ratio=0.5)
    pack["DrUMProfileSave"].execute(picked, "bob", None)
    other = tiny_clip("sd1", seed=43)
    loaded = pack["DrUMProfileLoad"].execute("bob.safetensors", other).args[0]
    encoder = node_module("caches").first_clip_encoder(node_module("clip_bridge").open_clip(state, other))
    assert loaded.profile.fingerprint == encoder.fingerprint != picked.profile.fingerprint
    torch.testing.assert_close(loaded.profile.features, encoder.pooled_features(PROMPTS), rtol=0, atol=0)
    assert loaded.profile.picks == picked.profile.picks


def test_a_history_without_coreset_is_saved_whole(pack, sd1, profiles_folder):
    history = pasted(pack)
    with pytest.raises(ValueError, match="DrUM Profile Save: connect a DrUM Coreset Sampler output, or a CLIP"):
        pack["DrUMProfileSave"].execute(history, "carol", None)
    pack["DrUMProfileSave"].execute(history, "carol.safetensors", sd1)
    loaded, full = pack["DrUMProfileLoad"].execute("carol.safetensors", sd1).args
    assert loaded.history.prompts == full.history.prompts == tuple(PROMPTS) and loaded.profile.picks == []


def test_save_stays_in_its_folder_and_bad_files_are_named(pack, sd1, profiles_folder, tmp_path):
    save, load = pack["DrUMProfileSave"], pack["DrUMProfileLoad"]
    for name in ("../outside", "/tmp/abs", "a/../../b", "  "):
        assert save.validate_inputs(name=name) is not True, name
        with pytest.raises(ValueError, match="DrUM Profile Save"):
            save.execute(pasted(pack), name, sd1)
    assert not list(tmp_path.glob("*.safetensors"))
    (profiles_folder / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    message = load.validate_inputs(file="junk.safetensors")
    assert "junk.safetensors" in message and "not a readable safetensors file" in message
    pack["DrUMProfileSave"].execute(coreset(pack, sd1, pasted(pack), 0.5), "edited", None)
    path = profiles_folder / "edited.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    message = load.validate_inputs(file="edited.safetensors")
    assert "content does not match" in message
    with pytest.raises(node_module("checked").DrUMInputError) as raised:  # a linked file name meets the same rule
        load.execute("edited.safetensors", sd1)
    assert str(raised.value) == message
    assert "not found" in load.validate_inputs(file="../secret.safetensors")
