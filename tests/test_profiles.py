"""Profiles (drum_core.profiles): exact file round trips, refused files, re-encoding; and the
conditioner's `relevant` references (Personalizer.condition) against a float64 restatement."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from drum_core import EmbeddingCache, History, Personalizer, Profile, ProfileFormatError, tiny
from drum_core.cli import main
from drum_core.diffusers_pipelines import PipelinePersonalizer, pipeline_encoders, profile_history
from drum_core.encoders import HFClipBackend
from drum_core.peca import PeCA, PeCAConfig
from drum_core.personalizer import ENCODER_ADAPTERS, most_similar, select_references

PROMPTS = [
    "a watercolor fox",
    'quotes " and \\ backslashes, a newline\nand a tab\t',
    "__import__('os').system('echo owned')",  # data, never code
    "ünïcödé — 東京の夜景",
    "a lighthouse at dusk",
]
INTENSITIES = [1.0, 2.5, 0.1 + 0.2, 0.0, 1e-300]  # float64 values a float32 file would round
TIMESTAMPS = [1714557600.0, 1714557600.25, 1.5e9, 0.0, 1714557601.0]


def sample_profile(fingerprint="encoder-A", timestamps=TIMESTAMPS) -> Profile:
    features = torch.randn(len(PROMPTS), 8, generator=torch.Generator().manual_seed(0))
    history = History(PROMPTS, INTENSITIES, timestamps, source="history.jsonl")
    return Profile(history, features, [3, 0, 4], fingerprint, {"ratio": 0.5, "k": 10, "seed": 42, "mode": "published"})


# ---------------------------------------------------------------------- files
@pytest.mark.parametrize("timestamps", [TIMESTAMPS, None])
def test_a_profile_file_round_trips_exactly(tmp_path, timestamps):
    profile = sample_profile(timestamps=timestamps)
    path = tmp_path / "alice.safetensors"
    profile.save(path)
    loaded = Profile.load(path)
    assert loaded.history.prompts == tuple(PROMPTS)
    assert loaded.history.intensities == tuple(INTENSITIES)  # float64, bit for bit
    assert loaded.history.timestamps == (None if timestamps is None else tuple(timestamps))
    assert loaded.history.source == "history.jsonl"
    assert torch.equal(loaded.features, profile.features) and loaded.features.dtype == torch.float32
    assert loaded.picks == [3, 0, 4] and loaded.fingerprint == "encoder-A"
    assert loaded.settings == {"ratio": 0.5, "k": 10, "seed": 42, "mode": "published"}
    assert loaded.prompts == [PROMPTS[3], PROMPTS[0], PROMPTS[4]] and loaded.intensities == [0.0, 1.0, 1e-300]
    assert list(loaded.references.prompts) == loaded.prompts
    assert not list(tmp_path.glob("*.tmp-*"))  # written atomically, nothing left beside it


def test_the_file_layout_is_the_documented_one(tmp_path):
    path = tmp_path / "p.safetensors"
    sample_profile().save(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == ["features", "intensities", "picks", "timestamps"]
        assert f.get_tensor("intensities").dtype == torch.float64 and f.get_tensor("picks").dtype == torch.int64
    assert meta["format"] == "drum-profile" and meta["version"] == "1"
    assert json.loads(meta["prompts"]) == PROMPTS and meta["fingerprint"] == "encoder-A"
    assert len(meta["content_sha256"]) == 64


def rewrite(path, change):
    """Re-save `path` after change(tensors, metadata), keeping its stored content hash."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize(
    "change",
    [
        lambda t, m: m.update(prompts=json.dumps(["an edited prompt", *PROMPTS[1:]])),
        lambda t, m: t["intensities"].__setitem__(0, 9.0),
        lambda t, m: t["picks"].__setitem__(0, 1),
        lambda t, m: m.update(fingerprint="encoder-B"),
        lambda t, m: t.pop("timestamps"),
    ],
    ids=["prompt", "intensity", "pick", "fingerprint", "dropped tensor"],
)
def test_a_changed_file_is_refused(tmp_path, change):
    path = tmp_path / "p.safetensors"
    sample_profile().save(path)
    rewrite(path, change)
    with pytest.raises(ProfileFormatError, match=r"p\.safetensors: its content does not match its content_sha256"):
        Profile.load(path)


def test_a_changed_byte_and_a_truncated_file_are_refused(tmp_path):
    path = tmp_path / "p.safetensors"
    sample_profile().save(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # a feature byte
    path.write_bytes(bytes(data))
    with pytest.raises(ProfileFormatError, match="content does not match"):
        Profile.load(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ProfileFormatError, match=r"p\.safetensors: not a readable safetensors file"):
        Profile.load(path)
    path.write_bytes(b"")
    with pytest.raises(ProfileFormatError, match="not a readable safetensors file"):
        Profile.load(path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        Profile.load(tmp_path / "missing.safetensors")


def test_foreign_newer_and_inconsistent_files_are_named(tmp_path):
    adapter = tmp_path / "L.safetensors"
    PeCA(PeCAConfig("clip", 64, 64, 16, 1, 78)).save(adapter)
    with pytest.raises(ProfileFormatError, match=r"L\.safetensors: not a DrUM profile"):
        Profile.load(adapter)
    pickle_like = tmp_path / "evil.safetensors"
    pickle_like.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle header is just unreadable bytes here
    with pytest.raises(ProfileFormatError, match="not a readable safetensors file"):
        Profile.load(pickle_like)

    from drum_core import profiles

    def forge(path, change):
        """A file whose content hash is valid but whose content is wrong (a foreign writer)."""
        rewrite(path, change)
        rewrite(path, lambda t, m: m.update(content_sha256=profiles._content_hash(t, m)))

    cases = {
        "format version '2'": lambda t, m: m.update(version="2"),
        "'prompts' must be a non-empty JSON list": lambda t, m: m.update(prompts=json.dumps({"a": 1})),
        "metadata is not valid JSON": lambda t, m: m.update(prompts="[unterminated"),
        "tensor 'features' has shape": lambda t, m: t.update(features=torch.zeros(2, 8)),
        "outside the history": lambda t, m: t.update(picks=torch.tensor([7])),
        "intensity -1.0 of prompt 0": lambda t, m: t["intensities"].__setitem__(0, -1.0),
        "missing tensor 'picks'": lambda t, m: t.pop("picks"),
    }
    for expected, change in cases.items():
        path = tmp_path / "forged.safetensors"
        sample_profile().save(path)
        forge(path, change)
        with pytest.raises(ProfileFormatError, match="forged.safetensors") as raised:
            Profile.load(path)
        assert expected in str(raised.value), (expected, str(raised.value))


def test_an_empty_history_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="nothing to save"):
        Profile(History([]), torch.zeros(0, 0), [], "x").save(tmp_path / "p.safetensors")


# ---------------------------------------------------------------------- encoders
@pytest.fixture(scope="module")
def clip_l():
    tokenizer = tiny.clip_tokenizer()
    return HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH), tokenizer)


def test_features_are_reused_for_the_same_encoder_and_re_encoded_for_another(tmp_path, clip_l):
    history = History(tiny.HISTORY[:6], [1, 2, 3, 1, 2, 3])
    cache = EmbeddingCache()
    profile = profile_history(clip_l, history, ratio=0.5, cache=cache)
    assert torch.equal(profile.features, cache.pooled_features(clip_l, history.prompts)) and profile.fingerprint == clip_l.fingerprint
    profile.save(tmp_path / "p.safetensors")
    loaded = Profile.load(tmp_path / "p.safetensors")
    fresh = EmbeddingCache()
    assert loaded.for_encoder(clip_l, fresh) is loaded and fresh.computed == 0  # same encoder: nothing encoded
    tokenizer = tiny.clip_tokenizer()
    other = HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH, seed=5), tokenizer)
    moved = loaded.for_encoder(other, fresh)
    assert fresh.computed == 6 and moved.fingerprint == other.fingerprint and moved.picks == loaded.picks
    torch.testing.assert_close(moved.features, other.pooled_features(history.prompts), rtol=0, atol=0)


def test_cli_saves_and_loads_a_profile(tmp_path, capsys):
    path = tmp_path / "me.safetensors"
    assert main(["profile", "--tiny-random", "--ratio", "0.5", "--json", "--no-progress", "--save", str(path)]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert main(["profile", "--load", str(path), "--json"]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["picked"] == saved["picked"] and len(saved["picked"]) == 6 and loaded["total"] == 12
    assert loaded["history"] == str(path)
    assert main(["profile", "--load", str(path), "--tiny-random", "--json", "--no-progress"]) == 0  # same encoder: reused
    assert json.loads(capsys.readouterr().out)["picked"] == saved["picked"]
    path.write_bytes(path.read_bytes()[:100])
    assert main(["profile", "--load", str(path)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert main(["profile", "--tiny-random", "--save", str(tmp_path / "me.pt")]) == 2
    assert "are .safetensors files" in capsys.readouterr().err


# ---------------------------------------------------------------------- relevant references
def naive_most_similar(query, features, count):
    """Literal restatement: cosine in float64 by hand, sort by (-similarity, index), keep `count`, ascending."""
    q = [float(v) for v in query]
    scored = []
    for i, row in enumerate(features.tolist()):
        dot = sum(a * b for a, b in zip(row, q))
        norm = math.sqrt(sum(a * a for a in row)) * math.sqrt(sum(b * b for b in q))
        scored.append((-(dot / norm), i))
    return sorted(i for _, i in sorted(scored)[:count])


def test_most_similar_is_the_cosine_top_m_with_ties_to_the_lower_index():
    features = torch.randn(40, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    features[[7, 21, 30]] = features[3] * torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)  # equal cosines
    query = features[3] + 1e-3 * torch.randn(16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for count in (1, 2, 3, 5, 40, 99):
        assert most_similar(query, features, count).tolist() == naive_most_similar(query, features, count), count
    tie = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    assert most_similar(torch.tensor([1.0, 0.0]), tie, 2).tolist() == [0, 2]  # three equal cosines: the two lowest indices


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_selected_references_equal_peca_run_on_just_those_references_in_float64(kind):
    config = PeCAConfig(kind, 64 if kind == "clip" else 128, 64, 16, 2, 78 if kind == "clip" else 20)
    width = config.encoder_width
    torch.manual_seed(3)
    adapter = PeCA(config).double().eval()
    tokens = config.query_tokens - 1 if kind == "clip" else config.query_tokens
    generator = torch.Generator().manual_seed(4)
    query = torch.randn(1, config.query_tokens, width, generator=generator, dtype=torch.float64)
    target = torch.randn(2, tokens, width, generator=generator, dtype=torch.float64)
    references = torch.randn(6, tokens, width, generator=generator, dtype=torch.float64)
    intensities = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5, 0.25], dtype=torch.float64)
    chosen = torch.tensor([1, 4, 5])
    state = adapter.encode_references(references)
    sliced = adapter(query, target, select_references(state, chosen), intensities[chosen], [0.3, 0.9])
    alone = adapter(query, target, references[chosen], intensities[chosen], [0.3, 0.9])
    for got, expected in zip(sliced, alone):
        if expected is not None:
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_relevant_m_equals_a_history_of_just_the_m_most_similar(family):
    _, encoders = pipeline_encoders(tiny.pipeline(family))
    adapters = {name: tiny.adapters(family)[ENCODER_ADAPTERS[name]] for name in encoders}
    prompts, intensities = tiny.HISTORY[:8], [1.0, 2.0, 0.5, 1.5, 3.0, 1.0, 0.25, 2.0]
    target = "a fox in the snow"
    cache = EmbeddingCache()
    full = Personalizer(family, encoders, adapters, cache)
    full.set_history(prompts, intensities)
    first = encoders["h" if family == "sd2" else "l"]
    chosen = naive_most_similar(first.pooled_features([target])[0], cache.pooled_features(first, prompts), 3)
    encoded = cache.computed
    got = full.condition(target, [0.3, 0.7], relevant=3)
    assert cache.computed == encoded  # the references' pooled features came from the cache
    assert got.chosen.tolist() == sorted(chosen)  # the Condition names the references that took part
    alone = Personalizer(family, encoders, adapters)
    alone.set_history([prompts[i] for i in chosen], [intensities[i] for i in chosen])
    expected = alone.condition(target, [0.3, 0.7])
    torch.testing.assert_close(got.tokens, expected.tokens, rtol=1e-5, atol=1e-5)
    if expected.pooled is not None:
        torch.testing.assert_close(got.pooled, expected.pooled, rtol=1e-5, atol=1e-5)
    everything = full.condition(target, 0.5)
    assert everything.chosen is None
    for m in (0, 8, 20):  # 0 and m >= R: every reference
        kept = full.condition(target, 0.5, relevant=m)
        torch.testing.assert_close(kept.tokens, everything.tokens, rtol=1e-5, atol=1e-5)  # thread count may differ per call
        assert kept.chosen is None
    assert not torch.allclose(full.condition(target, 0.5, relevant=1).tokens, everything.tokens)
    with pytest.raises(ValueError, match="relevant must be >= 0"):
        full.condition(target, 0.5, relevant=-1)


def test_pipeline_kwargs_take_relevant_and_use_the_profile_features():
    pipe = tiny.pipeline("sd1")
    session = PipelinePersonalizer(pipe, tiny.adapters("sd1"))
    history = History(tiny.HISTORY, [float(i % 4) + 0.5 for i in range(12)])
    profile = session.set_history(history, ratio=0.5)
    encoded = session.cache.computed
    kwargs = session.kwargs("a fox in the snow", 0.4, relevant=2)
    assert session.cache.computed == encoded
    chosen = naive_most_similar(session.backends["l"].pooled_features(["a fox in the snow"])[0], profile.features[profile.picks], 2)
    alone = Personalizer("sd1", session.backends, session.personalizer.adapters)
    alone.set_history([profile.prompts[i] for i in chosen], [profile.intensities[i] for i in chosen])
    expected = alone.condition("a fox in the snow", 0.4).tokens.to(kwargs["prompt_embeds"].dtype)
    torch.testing.assert_close(kwargs["prompt_embeds"], expected, rtol=1e-5, atol=1e-5)


def test_a_pipeline_takes_a_saved_profile_instead_of_the_history(tmp_path):
    pipe = tiny.pipeline("sd1")
    history = History(tiny.HISTORY, [float(i % 4) + 0.5 for i in range(12)])
    session = PipelinePersonalizer(pipe, tiny.adapters("sd1"))
    saved = session.set_history(history, ratio=0.25)
    expected = session.kwargs("a fox in the snow", 0.4)["prompt_embeds"]
    saved.save(tmp_path / "p.safetensors")
    other = PipelinePersonalizer(pipe, tiny.adapters("sd1"))
    used = other.set_profile(Profile.load(tmp_path / "p.safetensors"))
    assert other.cache.computed == len(used.prompts)  # the references' states only: the saved features were reused
    assert used.prompts == saved.prompts and torch.equal(other.kwargs("a fox in the snow", 0.4)["prompt_embeds"], expected)


def test_cli_personalizes_from_a_profile_file_and_with_relevant(tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "me.safetensors"
    assert main(["profile", "--tiny-random", "--ratio", "0.5", "--no-progress", "--save", str(path)]) == 0
    runs = {
        "history": ["--ratio", "0.5"],
        "profile": ["--profile", str(path)],
        "relevant": ["--profile", str(path), "--relevant", "1"],
    }
    images = {}
    for name, extra in runs.items():
        out = tmp_path / f"{name}.png"
        assert main(["personalize", "--tiny-random", "--no-progress", "--out", str(out), *extra]) == 0
        images[name] = np.asarray(Image.open(out))
    assert "6 of 12 history prompts as references" in capsys.readouterr().err
    assert np.array_equal(images["profile"], images["history"])
    assert not np.array_equal(images["relevant"], images["history"])
    assert main(["personalize", "--tiny-random", "--profile", str(path), "--ratio", "0.3"]) == 2
    assert "--ratio does nothing with --profile" in capsys.readouterr().err
