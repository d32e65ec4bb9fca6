"""One cache-key rule for every backend (drum_core.fingerprint): every tensor counts, computed once per weight version."""

import hashlib

import pytest
import torch

from drum_core import tiny
from drum_core.cache import EmbeddingCache
from drum_core.encoders import HFClipBackend, HFT5Backend
from drum_core.fingerprint import Identities, WeightsFingerprint, module_fingerprint, update_tensor, weights_fingerprint

PROMPTS = ["a red fox in the snow", "portrait of a tabby cat, soft light"]


def test_every_tensor_and_every_value_counts():
    torch.manual_seed(0)
    weights = {"a": torch.randn(64, 33), "b": torch.randn(1000), "ids": torch.arange(10)}
    key = weights_fingerprint(weights.items())
    assert weights_fingerprint(dict(reversed(list(weights.items()))).items()) == key  # name order, not insertion order
    for name, tensor in weights.items():
        for index in (0, tensor.numel() // 2 + 1, tensor.numel() - 1):  # off the strided sample too: the sums see it
            changed = {**weights, name: tensor.clone()}
            changed[name].view(-1)[index] += 1
            assert weights_fingerprint(changed.items()) != key, (name, index)
    assert weights_fingerprint({**weights, "b": weights["b"].half().float()}.items()) != key  # rounding of 1000 values
    assert weights_fingerprint({**weights, "c": torch.zeros(3)}.items()) != key  # an added buffer
    assert weights_fingerprint({**weights, "ids": weights["ids"].double()}.items()) != key  # dtype


def test_an_unreadable_tensor_never_reuses_a_key():
    meta = torch.empty(4, 4, device="meta")
    first, second = hashlib.sha256(), hashlib.sha256()
    update_tensor(first, meta)
    update_tensor(second, meta)
    assert first.hexdigest() != second.hexdigest()  # default: a fresh token each time -> a fresh computation


def test_identity_tokens_are_bounded_and_never_reused():
    class Slotted:
        __slots__ = ()  # cannot be weakly referenced: kept alive, at most `limit`

    identities = Identities(limit=4)
    hooks = [Slotted() for _ in range(10)]
    tokens = [identities.token(hook) for hook in hooks]
    assert len(set(tokens)) == 10 and identities.kept_alive == 4 and len(identities) == 4
    assert [identities.token(hook) for hook in hooks[-4:]] == tokens[-4:]  # the ones kept keep their token
    assert identities.token(hooks[0]) not in tokens  # one let go comes back with a new token (a fresh computation)
    identities.token(hooks[7])  # kept: 8, 9, 0, 7 (a use makes it the most recent)
    identities.token(hooks[1])  # lets hooks[8] go, the least recently used, not hooks[7], the first kept
    assert identities.token(hooks[7]) == tokens[7] and identities.token(hooks[8]) != tokens[8]
    assert identities.kept_alive == 4

    class Hook:
        def __call__(self):
            return None

    live = Hook()
    token = identities.token(live)
    for _ in range(1000):  # objects that can be weakly referenced leave with their objects
        identities.token(Hook())
    assert identities.token(live) == token and len(identities) == 5 and identities.kept_alive == 4


def test_fingerprint_is_computed_once_per_weight_version():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    key = WeightsFingerprint.of(model)
    assert [WeightsFingerprint.of(model) for _ in range(3)] == [key] * 3
    memo = model.__dict__[WeightsFingerprint.ATTRIBUTE]
    assert memo.computed == 1 and key == module_fingerprint(model)
    with torch.no_grad():
        model[0].weight[3, 4] += 0.5  # in place: the version counter moves
    assert WeightsFingerprint.of(model) != key and memo.computed == 2
    model[1].weight = torch.nn.Parameter(model[1].weight.detach().clone() * 2)  # replaced (a weight patch does this)
    assert WeightsFingerprint.of(model) == module_fingerprint(model) and memo.computed == 3


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_fine_tuning_one_block_gets_a_fresh_encode_from_the_disk_cache(kind, tmp_path):
    """The old key covered only embeddings, final norm and projection: a tuned block got the old encodings back."""
    if kind == "clip":
        tokenizer = tiny.clip_tokenizer()
        model = tiny.clip_text_model(tokenizer, tiny.L_WIDTH, seed=3)
        block = getattr(model, "text_model", model).encoder.layers[1].mlp.fc1  # transformers 4 / 5
        backend = lambda: HFClipBackend(model, tokenizer)  # noqa: E731  (a new backend object per run, as the CLI makes)
    else:
        tokenizer = tiny.t5_tokenizer()
        model = tiny.t5_encoder(tokenizer, seed=4)
        block = model.encoder.block[0].layer[1].DenseReluDense.wi_0
        backend = lambda: HFT5Backend(model, tokenizer)  # noqa: E731
    layers = (-1,) if kind == "t5" else (-2,)
    before = EmbeddingCache(tmp_path).encode(backend(), PROMPTS, layers)
    again = EmbeddingCache(tmp_path)  # a new process: memory empty, the disk entries answer
    assert torch.equal(again.encode(backend(), PROMPTS, layers).states[layers[0]], before.states[layers[0]]) and again.computed == 0
    with torch.no_grad():
        block.weight.add_(0.05 * torch.randn_like(block.weight))  # fine-tune one block only
    tuned = EmbeddingCache(tmp_path)
    fresh = tuned.encode(backend(), PROMPTS, layers).states[layers[0]]
    assert tuned.computed == len(PROMPTS)  # a new key: encoded again, not read from disk
    torch.testing.assert_close(fresh, backend().hidden_states(PROMPTS, layers[0]) if kind == "clip" else backend().hidden_states(PROMPTS))
    assert (fresh - before.states[layers[0]]).abs().max() > 1e-3
