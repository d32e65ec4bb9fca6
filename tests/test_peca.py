"""PeCA against the release's test vectors and a literal float64 restatement of docs/method.md §2-3."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import drum_core.peca as peca_module
from drum_core import PeCA
from drum_core.peca import PeCAConfig, PeCAFormatError

DATA = Path(__file__).parent / "data"
DEVICE = torch.device(os.environ.get("DRUM_TEST_DEVICE", "cpu"))  # bench/gpu_check.sh sets cuda


def read_vectors(name):
    with safe_open(str(DATA / name), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        cases = json.loads(f.metadata()["cases"])
    adapter = {k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")}
    return adapter, tensors, cases


# ---------------------------------------------------------------- the naive oracle
def naive_peca(sd, query, target, references, intensities, degree, kind, guidance=True):
    """Equations written out literally: concatenated context, materialized scores,
    one softmax per prompt segment (guidance=False: one softmax over all), loops over heads.
    float64 throughout."""
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("tf."))

    def linear(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    def layer_norm(x, name):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * sd[name + ".weight"] + sd[name + ".bias"]

    if kind == "t5":
        query, target = linear(query, "pre_proj"), linear(target, "pre_proj")
        references = linear(references, "pre_proj") if references is not None else None
    outputs = []
    for b in range(target.shape[0]):
        segments = [target[b]] + ([references[i] for i in range(references.shape[0])] if references is not None else [])
        if len(segments) == 1:
            shares = [1.0]
        else:
            p = [float(w) for w in intensities]
            shares = [1 - degree] + [degree * pi / sum(p) for pi in p]
        context = torch.cat(segments, 0)  # [T*(1+R), d]
        t = target.shape[1]
        x = query[0]
        d = x.shape[-1]
        heads = d // 64
        for layer in range(layers):
            pre = f"tf.{layer}."
            q = linear(x, pre + "attn.query")
            k = linear(context, pre + "attn.key")
            v = linear(context, pre + "attn.value")
            head_outs = []
            for h in range(heads):
                sl = slice(h * 64, (h + 1) * 64)
                scores = q[:, sl] @ k[:, sl].T / math.sqrt(64)  # [S, T*(1+R)] materialized
                probs = torch.zeros_like(scores)
                for j, share in enumerate(shares):
                    seg = slice(j * t, (j + 1) * t)
                    probs[:, seg] = torch.softmax(scores[:, seg], -1) * share
                if not guidance:
                    probs = torch.softmax(scores, -1)
                head_outs.append(probs @ v[:, sl])
            a = linear(torch.cat(head_outs, -1), pre + "attn.proj")
            x = layer_norm(x + a, pre + "norm1")
            hidden = linear(x, pre + "ff.0")
            hidden = hidden * torch.sigmoid(1.702 * hidden)
            x = layer_norm(x + linear(hidden, pre + "ff.2"), pre + "norm2")
        outputs.append(x)
    x = torch.stack(outputs)
    if kind == "t5":
        return linear(x, "post_proj"), None
    return x[:, :-1], x[:, -1]


# ---------------------------------------------------------------- release test vectors
@pytest.fixture(params=["sdpa", "sdpa-chunks", "blocked"])
def kernel(request, monkeypatch):
    """Both reference-attention kernels: sdpa with every reference in one batch or one per chunk, blocked one per block."""
    if request.param == "blocked":
        monkeypatch.setattr(peca_module, "BLOCK_SCORES", 1)
    if request.param == "sdpa-chunks":
        monkeypatch.setattr(peca_module, "SDPA_CHUNK_SCORES", 1)
    return request.param.removesuffix("-chunks")


@pytest.mark.parametrize("name,kind", [("peca_clip_d128_l3.safetensors", "clip"), ("peca_t5_e256_l2.safetensors", "t5")])
def test_release_vectors(name, kind, kernel):
    sd, tensors, cases = read_vectors(name)
    model = PeCA.from_state_dict(sd).double().set_kernel(kernel)
    assert model.config.kind == kind
    for case in cases:
        pre = f"case{case['case']}."
        refs = tensors.get(pre + "references")
        intensities = tensors.get(pre + "weights")
        tokens, pooled = model(tensors["query"], tensors[pre + "target"], refs, intensities, case["alpha"])
        torch.testing.assert_close(tokens, tensors[pre + "expected_tokens"], atol=1e-9, rtol=1e-9)
        oracle_tokens, oracle_pooled = naive_peca(sd, tensors["query"], tensors[pre + "target"], refs, intensities, case["alpha"], kind)
        torch.testing.assert_close(oracle_tokens, tensors[pre + "expected_tokens"], atol=1e-9, rtol=1e-9)
        if kind == "clip":
            torch.testing.assert_close(pooled, tensors[pre + "expected_pooled"], atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(oracle_pooled, tensors[pre + "expected_pooled"], atol=1e-9, rtol=1e-9)
        else:
            assert pooled is None


@pytest.mark.parametrize("name", ["peca_clip_d128_l3.safetensors", "peca_t5_e256_l2.safetensors"])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_release_vectors_on_the_test_device(name, dtype, tolerance, kernel):
    """float64 and fp32 (the nodes' precision) on DRUM_TEST_DEVICE (CPU here; CUDA in bench/gpu_check.sh) against the float64 vectors."""
    sd, tensors, cases = read_vectors(name)
    model = PeCA.from_state_dict({k: v.to(dtype) for k, v in sd.items()}).set_kernel(kernel).to(DEVICE)

    def on_device(x):
        return None if x is None else x.to(DEVICE, dtype)

    for case in cases:
        pre = f"case{case['case']}."
        references = on_device(tensors.get(pre + "references"))
        query, target = on_device(tensors["query"]), on_device(tensors[pre + "target"])
        tokens, pooled = model(query, target, references, tensors.get(pre + "weights"), case["alpha"])
        assert tokens.device.type == DEVICE.type
        torch.testing.assert_close(tokens.cpu().double(), tensors[pre + "expected_tokens"], atol=tolerance, rtol=tolerance)
        if pooled is not None:
            torch.testing.assert_close(pooled.cpu().double(), tensors[pre + "expected_pooled"], atol=tolerance, rtol=tolerance)


# ---------------------------------------------------------------- published layouts, random weights
def random_adapter(config: PeCAConfig, seed=0):
    torch.manual_seed(seed)
    model = PeCA(config).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
        for block in model.tf:
            block.norm1.weight.add_(1)
            block.norm2.weight.add_(1)
    return model.eval()  # as PeCA.from_state_dict returns it


SMALL = {  # published layouts with fewer blocks (the equations do not depend on depth)
    "L": PeCAConfig("clip", 768, 768, 192, 2, 78),
    "bigG": PeCAConfig("clip", 1280, 1280, 320, 1, 78),
    "T5": PeCAConfig("t5", 4096, 1024, 1024, 1, 256),
}


@pytest.mark.parametrize("name", ["L", "bigG", "T5"])
@pytest.mark.parametrize("refs", [0, 1, 3])
@pytest.mark.parametrize("degree", [0.0, 0.3, 1.0])
def test_published_layouts_match_oracle(name, refs, degree, kernel):
    config = SMALL[name]
    model = random_adapter(config, seed=refs).set_kernel(kernel)
    assert model.config.name == name
    g = torch.Generator().manual_seed(7)
    t = 77 if config.kind == "clip" else 256
    e = config.encoder_width
    query = torch.randn(1, config.query_tokens, e, generator=g, dtype=torch.float64)
    target = torch.randn(2 if config.kind == "clip" else 1, t, e, generator=g, dtype=torch.float64)
    references = torch.randn(refs, t, e, generator=g, dtype=torch.float64) if refs else None
    intensities = torch.rand(refs, generator=g, dtype=torch.float64) + 0.5 if refs else None
    sd = {k: v for k, v in model.state_dict().items()}
    tokens, pooled = model(query, target, references, intensities, degree)
    oracle_tokens, oracle_pooled = naive_peca(sd, query, target, references, intensities, degree, config.kind)
    torch.testing.assert_close(tokens, oracle_tokens, atol=1e-10, rtol=1e-9)
    if config.kind == "clip":
        assert tokens.shape == (target.shape[0], 77, e) and pooled.shape == (target.shape[0], e)
        torch.testing.assert_close(pooled, oracle_pooled, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", ["L", "T5"])
def test_no_guidance_ablation_matches_oracle(name, kernel):
    config = SMALL[name]
    model = random_adapter(config, seed=4).set_kernel(kernel)
    g = torch.Generator().manual_seed(9)
    t = 77 if config.kind == "clip" else 256
    e = config.encoder_width
    query = torch.randn(1, config.query_tokens, e, generator=g, dtype=torch.float64)
    target = torch.randn(2, t, e, generator=g, dtype=torch.float64)
    references = torch.randn(3, t, e, generator=g, dtype=torch.float64)
    tokens, _ = model(query, target, references, None, 0.3, guidance=False)
    oracle, _ = naive_peca(model.state_dict(), query, target, references, torch.ones(3), 0.3, config.kind, guidance=False)
    torch.testing.assert_close(tokens, oracle, atol=1e-10, rtol=1e-9)
    assert not torch.allclose(tokens, model(query, target, references, None, 0.3)[0])


def test_published_parameter_counts():
    counts = {"L": 26.67e6, "H": 47.36e6, "bigG": 73.95e6, "T5": 71.67e6}
    tensors = {"L": 161, "H": 161, "bigG": 161, "T5": 165}
    for name, expected in counts.items():
        model = PeCA(PeCAConfig.published(name))
        assert abs(sum(p.numel() for p in model.parameters()) - expected) < 0.01e6, name
        assert len(model.state_dict()) == tensors[name]


# ---------------------------------------------------------------- guidance edge cases
@pytest.fixture(scope="module")
def tiny():
    model = random_adapter(PeCAConfig("clip", 128, 128, 32, 2, 78))
    g = torch.Generator().manual_seed(1)
    query = torch.randn(1, 78, 128, generator=g, dtype=torch.float64)
    target = torch.randn(3, 77, 128, generator=g, dtype=torch.float64)
    refs = torch.randn(4, 77, 128, generator=g, dtype=torch.float64)
    return model, query, target, refs


def test_alpha_zero_and_zero_weights_equal_target_only(tiny):
    model, query, target, refs = tiny
    alone = model(query, target)[0]
    torch.testing.assert_close(model(query, target, refs, None, 0.0)[0], alone)
    torch.testing.assert_close(model(query, target, refs, torch.zeros(4), 0.7)[0], alone)


def test_single_reference_weight_cancels_and_alpha_one_ignores_target(tiny):
    model, query, target, refs = tiny
    one = refs[:1]
    torch.testing.assert_close(model(query, target, one, [0.2], 0.4)[0], model(query, target, one, [9.0], 0.4)[0])
    other_target = torch.randn_like(target)
    torch.testing.assert_close(model(query, target, refs, None, 1.0)[0], model(query, other_target, refs, None, 1.0)[0])


def test_reference_state_reuse_and_per_row_alpha(tiny, kernel):
    model, query, target, refs = tiny
    model.set_kernel(kernel)
    state = model.encode_references(refs)
    intensities = torch.tensor([1.0, 2.0, 0.5, 3.0])
    sweep = model(query, target[:1].expand(3, -1, -1), state, intensities, [0.0, 0.5, 1.0])[0]
    for i, degree in enumerate([0.0, 0.5, 1.0]):
        torch.testing.assert_close(sweep[i], model(query, target[:1], refs, intensities, degree)[0][0])


def test_pooled_only_is_the_pooled_row_of_a_full_run(tiny, kernel):
    """Query rows never mix, so running the pooled row alone gives the full run's pooled output exactly."""
    model, query, target, refs = tiny
    model.set_kernel(kernel)
    intensities = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    full_tokens, full_pooled = model(query, target, refs, intensities, [0.2, 0.5, 0.9])
    tokens, pooled = model(query, target, model.encode_references(refs), intensities, [0.2, 0.5, 0.9], pooled_only=True)
    assert tokens is None
    torch.testing.assert_close(pooled, full_pooled, atol=1e-12, rtol=1e-12)
    oracle_pooled = naive_peca(model.state_dict(), query, target[:1], refs, intensities, 0.2, "clip")[1]
    torch.testing.assert_close(pooled[:1], oracle_pooled, atol=1e-9, rtol=1e-9)
    with pytest.raises(ValueError, match="T5 adapter has no pooled output"):
        random_adapter(PeCAConfig.for_encoder("t5", 256, layers=1)).double()(
            torch.zeros(1, 256, 256), torch.zeros(1, 256, 256), pooled_only=True
        )


def test_first_block_reference_mix_is_reused_only_while_query_and_weights_match(tiny, kernel):
    """Block 0's queries are the constant query: its reference attention is computed once per state and
    reused while the query, the intensities and the kernel are unchanged; every result equals a fresh state's."""
    model, query, target, refs = tiny
    model.set_kernel(kernel)
    intensities = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    state = model.encode_references(refs)

    def fresh(q, w, t=target):
        return model(q, t, model.encode_references(refs), w, 0.4)[0]

    with torch.no_grad():
        first = model(query, target, state, intensities, 0.4)[0]
        assert list(state.shared_mixes) == [(0, 78)]  # block 0, 78 query rows
        kept = state.shared_mixes[(0, 78)].mixed
        other_target = torch.randn_like(target)
        torch.testing.assert_close(
            model(query, other_target, state, intensities, 0.4)[0], fresh(query, intensities, other_target), atol=0, rtol=0
        )
        assert state.shared_mixes[(0, 78)].mixed is kept  # reused for a new target
        torch.testing.assert_close(first, fresh(query, intensities), atol=0, rtol=0)
        other_weights = torch.tensor([3.0, 0.5, 2.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(model(query, target, state, other_weights, 0.4)[0], fresh(query, other_weights), atol=0, rtol=0)
        other_query = query + 0.1
        torch.testing.assert_close(model(query + 0.1, target, state, intensities, 0.4)[0], fresh(other_query, intensities), atol=0, rtol=0)
        assert state.shared_mixes[(0, 78)].mixed is not kept  # recomputed for the new query and intensities
        model(query, target, state, intensities, 0.4, pooled_only=True)
        assert set(state.shared_mixes) == {(0, 78), (0, 1)}  # the pooled row alone is its own entry
    assert state.to(state.keys[0].device) is state
    with torch.enable_grad():
        state = model.encode_references(refs)
        model(query, target, state, intensities, 0.4)
        assert state.shared_mixes == {}  # nothing kept while gradients are recorded (training)


def test_sdpa_kernel_runs_references_in_chunks_of_bounded_scores(tiny, monkeypatch):
    """The sdpa kernel hands SDPA a chunk of references with the query repeated to the chunk's batch
    (the fused kernels need equal batch sizes), each chunk within SDPA_CHUNK_SCORES scores; same sum."""
    model, query, target, refs = tiny
    model.set_kernel("sdpa")
    intensities = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    one_batch = model(query, target[:1], refs, intensities, 0.4)[0]
    calls = []
    attend = torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, *args, **kwargs):
        calls.append((q.shape[0], k.shape[0], q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2]))
        return attend(q, k, v, *args, **kwargs)

    monkeypatch.setattr(peca_module.F, "scaled_dot_product_attention", recording)
    per_reference = model.config.width // peca_module.HEAD_WIDTH * 78 * 77  # heads * S * T
    monkeypatch.setattr(peca_module, "SDPA_CHUNK_SCORES", 3 * per_reference)
    chunked = model(query, target[:1], refs, intensities, 0.4)[0]
    # per block: the target's attention, then the 4 references as a chunk of 3 and one of 1
    assert [(q, k) for q, k, _scores in calls] == [(1, 1), (3, 3), (1, 1)] * model.config.layers
    assert max(scores for _q, _k, scores in calls) == 3 * per_reference
    torch.testing.assert_close(chunked, one_batch, atol=1e-12, rtol=1e-12)


def test_bad_inputs_are_named(tiny):
    model, query, target, refs = tiny
    with pytest.raises(ValueError, match="degree must lie in"):
        model(query, target, refs, None, 1.5)
    with pytest.raises(ValueError, match="intensities"):
        model(query, target, refs, [1.0, float("nan"), 1.0, 1.0], 0.3)
    with pytest.raises(ValueError, match="PeCA intensities: 1 preference intensities for 4 prompts"):
        model(query, target, refs, [1.0], 0.3)
    with pytest.raises(ValueError, match=r"target must be \[N, T, 128\]"):
        model(query, torch.zeros(1, 77, 768, dtype=torch.float64))


# ---------------------------------------------------------------- files
def test_save_and_load_round_trip(tmp_path, tiny):
    model = tiny[0]
    path = tmp_path / "adapter.safetensors"
    model.save(path)
    loaded = PeCA.from_file(path)
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k].double(), v.float().double())


def test_published_layout_file_loads_strictly(tmp_path):
    sd = PeCA(PeCAConfig.published("L")).state_dict()
    path = tmp_path / "L.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))  # no metadata, like the release
    model = PeCA.from_file(path)
    assert model.config == PeCAConfig.published("L") and model.config.name == "L"


@pytest.mark.parametrize("read", [PeCA.from_file, PeCA.check_file], ids=["from_file", "check_file"])
def test_truncated_partial_and_foreign_files_are_named(tmp_path, tiny, read):
    """check_file (the header only) refuses what from_file refuses, with the same message."""
    sd = {k: v.float() for k, v in tiny[0].state_dict().items()}
    good = tmp_path / "good.safetensors"
    tiny[0].save(good)
    config = read(good)
    assert (config if read == PeCA.check_file else config.config) == tiny[0].config
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in sd.items() if k != "tf.1.attn.key.weight"}, str(partial))
    with pytest.raises(PeCAFormatError, match=r"partial.safetensors: not a complete PeCA .*missing keys: tf\.1\.attn\.key\.weight"):
        read(partial)
    misshaped = tmp_path / "misshaped.safetensors"
    save_file(dict(sd, **{"tf.0.ff.2.weight": torch.zeros(128, 16)}), str(misshaped))
    with pytest.raises(PeCAFormatError, match=r"misshaped.safetensors: .*mis-shaped: tf\.0\.ff\.2\.weight"):
        read(misshaped)
    foreign = tmp_path / "vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4)}, str(foreign))
    with pytest.raises(PeCAFormatError, match="vae.safetensors: not a PeCA"):
        read(foreign)
    tagged = tmp_path / "profile.safetensors"
    save_file(sd, str(tagged), metadata={"format": "drum-profile"})
    with pytest.raises(PeCAFormatError, match="profile.safetensors: a 'drum-profile' file, not a PeCA adapter"):
        read(tagged)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(PeCAFormatError, match="cut.safetensors: unreadable"):
        read(truncated)
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        read(tmp_path / "nothere.safetensors")
    pickled = tmp_path / "adapter.ckpt"
    pickled.write_bytes(b"not read")
    with pytest.raises(PeCAFormatError, match="adapter.ckpt: adapters are read from .safetensors files only"):
        read(pickled)
