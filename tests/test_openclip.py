"""OpenClipBackend against open_clip's own outputs, on tiny random open_clip models (no download)."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from support import clip_oracle

from drum_core import Personalizer, tiny
from drum_core.backend import TextEncoderBackend
from drum_core.encoder_factory import EncoderSpecError, open_encoder
from drum_core.encoders import OpenClipBackend
from drum_core.peca import PeCA
from drum_core.train.cli import main

STUBS = Path(__file__).resolve().parent / "support" / "stubs"
PROMPTS = ["a red fox in the snow", "", "portrait of a tabby cat, soft light"]
WIDTH = 64
VISION = {"image_size": 32, "patch_size": 16, "width": 64, "layers": 1, "head_width": 32}
TEXT = {"context_length": 77, "vocab_size": 49408, "width": WIDTH, "heads": 2, "layers": 3}
# open_clip.CLIP: text tower inlined, text_projection a Parameter [E, P], argmax pooling;
# CustomTextCLIP: a TextTransformer in .text, a Linear projection with bias, pooling at the EOS id
CONFIGS = {
    "CLIP": {"embed_dim": 32, "vision_cfg": VISION, "text_cfg": TEXT},
    "CustomTextCLIP": {
        "embed_dim": 32,
        "vision_cfg": VISION,
        "text_cfg": {**TEXT, "proj_bias": True, "pool_type": "eos", "eos_id": 49407},
        "custom_text": True,
    },
}


@pytest.fixture(scope="module")
def open_clip():
    """open_clip, imported beside the import-only torchvision stub, which is then taken off again
    (PyPI's torchvision cannot load beside the CPU torch; open_clip imports it at import time)."""
    from transformers.utils import is_torchvision_available

    is_torchvision_available()  # transformers caches this answer: let it see the real torchvision, not the stub
    path, finders = list(sys.path), list(sys.meta_path)
    before = {name for name in sys.modules if name.split(".")[0] == "torchvision"}
    sys.path.insert(0, str(STUBS))
    try:
        return importlib.import_module("open_clip")
    finally:
        sys.path[:], sys.meta_path[:] = path, finders
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision" and n not in before]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def tokenizer(open_clip):
    return open_clip.get_tokenizer("ViT-B-32")  # SimpleTokenizer: its BPE vocabulary ships in the package


def build(open_clip, name: str, seed: int = 0):
    torch.manual_seed(seed)
    config = dict(CONFIGS[name])
    cls = open_clip.CustomTextCLIP if config.pop("custom_text", False) else open_clip.CLIP
    model = cls(**config).eval()
    with torch.no_grad():  # open_clip starts LayerNorms at 1/0: make ln_final visible in the numbers
        model_tower(model).ln_final.weight.uniform_(0.5, 1.5)
        model_tower(model).ln_final.bias.normal_(0, 0.2)
    return model


def model_tower(model):
    return getattr(model, "text", model)


@pytest.fixture(scope="module", params=list(CONFIGS))
def encoder(request, open_clip, tokenizer, one_thread):
    model = build(open_clip, request.param)
    return model, OpenClipBackend(model, tokenizer)


def by_hand(model, ids: torch.Tensor, blocks: int) -> torch.Tensor:
    """Embeddings + positions through the first `blocks` residual blocks, with the causal mask."""
    tower = model_tower(model)
    with torch.no_grad():
        x = tower.token_embedding(ids) + tower.positional_embedding
        for block in tower.transformer.resblocks[:blocks]:
            x = block(x, attn_mask=tower.attn_mask)
    return x


def test_backend_satisfies_the_protocol(encoder):
    _, backend = encoder
    assert isinstance(backend, TextEncoderBackend)
    assert (backend.kind, backend.width, backend.tokens_per_prompt, backend.layers) == ("clip", WIDTH, 77, 3)
    ids = backend.token_ids(PROMPTS)
    assert ids.shape == (3, 77) and ids[1, :2].tolist() == [49406, 49407] and ids[1, 2:].eq(0).all()  # SOT, EOT, zeros
    assert backend.eos_positions(ids).tolist() == [int(i.argmax()) for i in ids]


def test_last_layer_is_raw_and_final_norm_gives_open_clips_tokens(encoder):
    model, backend = encoder
    ids = backend.token_ids(PROMPTS)
    raw = backend.hidden_states(PROMPTS, -1)
    assert raw.shape == (3, 77, WIDTH) and raw.dtype == torch.float32
    with torch.no_grad():
        if hasattr(model, "text"):
            model.text.output_tokens = True
            _, tokens = model.text(ids)  # the TextTransformer's own token output, after ln_final
            model.text.output_tokens = False
        else:
            out = model.forward_intermediates(text=ids, intermediates_only=True, normalize_intermediates=True)
            tokens = out["text_intermediates"][-1]  # open_clip's last block, ln_final applied
    torch.testing.assert_close(backend.final_norm(raw), tokens)
    assert (raw - tokens).abs().max() > 0.1  # raw really is before ln_final


def test_pooled_features_are_encode_text(encoder):
    model, backend = encoder
    with torch.no_grad():
        expected = model.encode_text(backend.token_ids(PROMPTS), normalize=False)
    assert expected.shape == (3, 32)
    torch.testing.assert_close(backend.pooled_features(PROMPTS), expected)


def test_penultimate_layer_is_the_hand_computation(encoder):
    model, backend = encoder
    ids = backend.token_ids(PROMPTS)
    torch.testing.assert_close(backend.hidden_states(PROMPTS, -2), by_hand(model, ids, 2))
    torch.testing.assert_close(backend.hidden_states(PROMPTS, -3), by_hand(model, ids, 1))
    with pytest.raises(ValueError, match="CLIP layer -4 out of range: this encoder has 3 layers"):
        backend.hidden_states(PROMPTS, -4)


def test_empty_query_is_the_empty_prompt_plus_its_eos_state(encoder):
    _, backend = encoder
    query = backend.empty_query()
    assert query.shape == (1, 78, WIDTH)
    torch.testing.assert_close(query[:, :77], backend.hidden_states([""]))
    torch.testing.assert_close(query[0, 77], query[0, 1])  # "" is SOT, EOT: EOT sits at position 1


def test_fewer_layers_make_a_lower_top(open_clip, tokenizer, one_thread):
    model = build(open_clip, "CLIP")
    full, cut = OpenClipBackend(model, tokenizer), OpenClipBackend(model, tokenizer, layers=2)
    torch.testing.assert_close(cut.hidden_states(PROMPTS, -1), full.hidden_states(PROMPTS, -2))
    torch.testing.assert_close(cut.empty_query()[:, :77], full.hidden_states([""], -2))
    assert cut.fingerprint != full.fingerprint and "blocks=2/3" in cut.fingerprint
    with pytest.raises(ValueError, match="layers=4: CLIP has 3 text blocks"):
        OpenClipBackend(model, tokenizer, layers=4)


def test_fingerprint_follows_weights_and_projection(open_clip, tokenizer, one_thread):
    first, second = build(open_clip, "CLIP", seed=0), build(open_clip, "CLIP", seed=1)
    assert OpenClipBackend(first, tokenizer).fingerprint == OpenClipBackend(first, tokenizer).fingerprint
    assert OpenClipBackend(first, tokenizer).fingerprint != OpenClipBackend(second, tokenizer).fingerprint
    unprojected = OpenClipBackend(first, tokenizer, project_pooled=False)
    assert "projected=False" in unprojected.fingerprint
    assert unprojected.pooled_features(PROMPTS).shape == (3, WIDTH)


def test_other_text_towers_are_refused_by_name(open_clip, tokenizer):
    short = open_clip.CLIP(embed_dim=32, vision_cfg=VISION, text_cfg={**TEXT, "context_length": 64})
    with pytest.raises(ValueError, match="CLIP reads 64 tokens per prompt; PeCA's CLIP adapters need 77"):
        OpenClipBackend(short, tokenizer)
    with pytest.raises(ValueError, match="Linear is not an open_clip TextTransformer"):
        OpenClipBackend(torch.nn.Linear(2, 2), tokenizer)


def test_an_adapter_personalizes_through_the_open_clip_encoder(encoder):
    _, backend = encoder
    personalizer = Personalizer("sd1", {"l": backend}, {"l": tiny.adapter("clip", WIDTH)})
    plain = personalizer.condition(PROMPTS[0], degree=0.5)
    torch.testing.assert_close(plain.tokens[0], backend.final_norm(backend.hidden_states([PROMPTS[0]]))[0])
    personalizer.set_history(tiny.HISTORY[:4], intensities=[1.0, 0.5, 1.0, 2.0])
    condition = personalizer.condition(PROMPTS[0], degree=[0.0, 0.5])
    assert condition.tokens.shape == (2, 77, WIDTH) and torch.isfinite(condition.tokens).all()
    assert (condition.tokens[0] - condition.tokens[1]).abs().max() > 1e-4  # alpha moves the condition


def test_drum_train_reads_an_open_clip_folder_and_exports_an_adapter(tmp_path, open_clip, one_thread):
    folder = tmp_path / "openclip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIGS["CLIP"]}), encoding="utf-8")
    model = build(open_clip, "CLIP", seed=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    spec = f"open_clip:local-dir:{folder}"

    backend = open_encoder(spec)
    assert isinstance(backend, OpenClipBackend) and backend.projection is None  # training needs no projection
    shallower = open_encoder(spec, layers=2)  # --encoder-layers: the first blocks only (SD2's 23 of ViT-H's 24)
    torch.testing.assert_close(shallower.hidden_states(PROMPTS, -1), backend.hidden_states(PROMPTS, -2))
    assert shallower.fingerprint != backend.fingerprint
    with torch.no_grad():
        tokens = model.forward_intermediates(text=backend.token_ids(PROMPTS), intermediates_only=True)["text_intermediates"][-1]
    torch.testing.assert_close(backend.hidden_states(PROMPTS), tokens)  # the saved weights, loaded

    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(tiny.HISTORY), encoding="utf-8")
    out = tmp_path / "run"
    flags = ["--encoder", spec, "--captions", str(captions), "--out", str(out), "--batch-size", "4", "--epochs", "1"]
    flags += ["--layers", "1", "--warmup-steps", "1", "--validation-fraction", "0", "--no-progress", "--no-tensorboard"]
    assert main(flags) == 0
    adapter = PeCA.from_file(str(out / "adapter.safetensors"))
    assert (adapter.config.kind, adapter.config.encoder_width, adapter.config.layers) == ("clip", WIDTH, 1)
    torch.testing.assert_close(adapter.base_query, backend.empty_query())


def test_open_encoder_refuses_pickled_weights(tmp_path, open_clip):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIGS["CLIP"]}), encoding="utf-8")
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(EncoderSpecError, match=r"\.safetensors only, not open_clip_pytorch_model\.bin"):
        open_encoder(f"open_clip:local-dir:{tmp_path}")
    with pytest.raises(EncoderSpecError, match="name the weights"):
        open_encoder("open_clip:ViT-B-32")


def test_one_pass_gives_every_layer_and_the_pooled_state_exactly(encoder):
    model, backend = encoder
    blocks: list[int] = []
    hooks = [
        block.register_forward_pre_hook(lambda _m, _a, i=i: blocks.append(i))
        for i, block in enumerate(model_tower(model).transformer.resblocks)
    ]
    try:
        encoding = backend.encode(PROMPTS, (-3, -2, -1), eos=True)
        assert blocks == [0, 1, 2]  # every block ran once
        blocks.clear()
        shallow = backend.encode(PROMPTS, (-3,))
        assert blocks == [0]  # no deeper than asked
    finally:
        for hook in hooks:
            hook.remove()
    for layer in (-3, -2, -1):
        torch.testing.assert_close(encoding.states[layer], backend.hidden_states(PROMPTS, layer), rtol=0, atol=0)
    torch.testing.assert_close(shallow.states[-3], encoding.states[-3], rtol=0, atol=0)
    torch.testing.assert_close(encoding.eos, backend.raw_pooled(PROMPTS), rtol=0, atol=0)
    torch.testing.assert_close(backend.project(backend.final_norm(encoding.eos)), backend.pooled_features(PROMPTS), rtol=0, atol=0)


def test_backend_equals_a_float64_forward_through_the_layers(encoder):
    """Not the open_clip calls the backend makes: its text tower written out in float64 (tests/support/clip_oracle.py)."""
    model, backend = encoder
    ids = backend.token_ids(PROMPTS)
    tower = clip_oracle.open_clip_tower(model)
    outputs, final = clip_oracle.run(tower, ids)
    for layer in (-1, -2, -3):
        torch.testing.assert_close(backend.hidden_states(PROMPTS, layer).double(), outputs[layer], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(backend.final_norm(backend.hidden_states(PROMPTS, -1)).double(), final, rtol=1e-5, atol=1e-5)
    positions = [row.index(49407) for row in ids.tolist()]  # the end-of-text token: the highest id, so argmax pooling agrees
    torch.testing.assert_close(backend.pooled_features(PROMPTS).double(), clip_oracle.pooled(tower, final, positions), rtol=1e-5, atol=1e-5)
