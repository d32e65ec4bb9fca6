"""EmbeddingCache: computed once per (encoder, layer, prompt), reused in memory and on disk."""

from pathlib import Path

import pytest
import torch

from drum_core import EmbeddingCache, Personalizer, tiny
from drum_core.adapter_names import ENCODER_ADAPTERS
from drum_core.diffusers_pipelines import pipeline_encoders
from drum_core.encoders import HFClipBackend

PROMPTS = tiny.HISTORY[:5]


@pytest.fixture(scope="module")
def backend():
    tokenizer = tiny.clip_tokenizer()
    return HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH), tokenizer)


def entry_files(directory):
    return sorted(Path(directory).rglob("*.safetensors"))


def test_memory_reuse_and_exact_values(backend):
    cache = EmbeddingCache()
    first = cache.hidden_states(backend, PROMPTS, -1)
    torch.testing.assert_close(first, backend.hidden_states(PROMPTS, -1), rtol=0, atol=0)
    assert cache.computed == 5
    again = cache.hidden_states(backend, list(reversed(PROMPTS)) + PROMPTS[:1], -1)
    assert cache.computed == 5
    torch.testing.assert_close(again[0], first[4], rtol=0, atol=0)
    cache.hidden_states(backend, PROMPTS, -2)  # another layer is another entry
    cache.pooled_features(backend, PROMPTS)
    assert cache.computed == 15


def test_repeated_prompts_are_encoded_once_and_counted_in_progress(backend):
    cache, calls = EmbeddingCache(batch_size=2), []
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[0]]
    states = cache.hidden_states(backend, prompts, -1, progress=lambda done, total: calls.append((done, total)))
    assert cache.computed == 3 and calls == [(0, 5), (4, 5), (5, 5)]
    torch.testing.assert_close(states[4], states[0], rtol=0, atol=0)


def test_disk_reuse_across_instances_and_progress(tmp_path, backend):
    calls = []
    EmbeddingCache(tmp_path).hidden_states(backend, PROMPTS, -1, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    assert len(entry_files(tmp_path)) == 5
    fresh = EmbeddingCache(tmp_path)
    states = fresh.hidden_states(backend, PROMPTS, -1)
    assert fresh.computed == 0
    torch.testing.assert_close(states, backend.hidden_states(PROMPTS, -1), rtol=0, atol=0)


def test_corrupt_and_foreign_entries_are_rebuilt(tmp_path, backend):
    EmbeddingCache(tmp_path).hidden_states(backend, PROMPTS[:2], -1)
    first, second = entry_files(tmp_path)
    second.write_bytes(first.read_bytes())  # a valid file, but another prompt's entry
    first.write_bytes(first.read_bytes()[:100])  # truncated
    cache = EmbeddingCache(tmp_path)
    states = cache.hidden_states(backend, PROMPTS[:2], -1)
    assert cache.computed == 2
    torch.testing.assert_close(states, backend.hidden_states(PROMPTS[:2], -1), rtol=0, atol=0)
    assert EmbeddingCache(tmp_path).hidden_states(backend, PROMPTS[:2], -1).shape == (2, 77, tiny.L_WIDTH)


def test_interrupting_progress_keeps_finished_entries(tmp_path, backend):
    cache = EmbeddingCache(tmp_path, batch_size=2)

    def stop_after_first_batch(done, total):
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.hidden_states(backend, PROMPTS, -1, progress=stop_after_first_batch)
    assert len(entry_files(tmp_path)) == 2
    resumed = EmbeddingCache(tmp_path)
    resumed.hidden_states(backend, PROMPTS, -1)
    assert resumed.computed == 3


def test_no_prompts_is_an_error(backend):
    with pytest.raises(ValueError, match="no prompts"):
        EmbeddingCache().hidden_states(backend, [], -1)


def test_every_layer_and_the_pooled_features_come_from_one_pass_per_prompt(tmp_path, backend):
    cache = EmbeddingCache(tmp_path)
    encoding = cache.encode(backend, PROMPTS, [-2, -1], features=True)
    assert cache.computed == 5 and len(entry_files(tmp_path)) == 15  # one pass per prompt, three entries each
    direct = backend.encode(PROMPTS, (-2, -1), eos=True)
    for layer in (-2, -1):
        torch.testing.assert_close(encoding.states[layer], direct.states[layer], rtol=0, atol=0)
        torch.testing.assert_close(cache.hidden_states(backend, PROMPTS, layer), backend.hidden_states(PROMPTS, layer), rtol=0, atol=0)
    torch.testing.assert_close(encoding.features, backend.pooled_features(PROMPTS), rtol=0, atol=0)
    torch.testing.assert_close(cache.pooled_features(backend, PROMPTS), encoding.features, rtol=0, atol=0)
    assert encoding.eos is None and direct.features is None  # a cache gives features, a backend its raw EOS states
    assert cache.computed == 5  # each entry served from the cache
    cache.encode(backend, PROMPTS[:2], [-3, -1])  # a missing entry: those prompts run once more, for all asked
    assert cache.computed == 7


def test_cache_layers_come_from_the_same_pass_and_are_not_returned(backend):
    """The coreset's feature pass: pooled features returned, the references' layers only cached."""
    cache = EmbeddingCache()
    encoding = cache.encode(backend, PROMPTS, features=True, cache_layers=[-2, -1])
    assert encoding.states == {} and cache.computed == 5
    torch.testing.assert_close(encoding.features, backend.pooled_features(PROMPTS), rtol=0, atol=0)
    states = cache.encode(backend, PROMPTS[1:3], [-2, -1]).states  # the picked references: no new pass
    assert cache.computed == 5
    for layer in (-2, -1):
        torch.testing.assert_close(states[layer], backend.hidden_states(PROMPTS[1:3], layer), rtol=0, atol=0)
    cache.encode(backend, PROMPTS, features=True, cache_layers=[-3])  # all asked-for entries cached: nothing runs
    assert cache.computed == 5


def test_a_history_prompt_runs_through_each_encoder_once():
    """SD3 (CLIP-L and bigG at layers -2 and -1 plus pooled, T5): one forward pass per history prompt and encoder."""
    family = "sd3"
    _, encoders = pipeline_encoders(tiny.pipeline(family))
    adapters = {name: tiny.adapters(family)[ENCODER_ADAPTERS[name]] for name in encoders}
    rows = {name: [] for name in encoders}
    hooks = [
        encoder.model.register_forward_pre_hook(
            lambda _m, args, kwargs, name=name: rows[name].append(len((args or [kwargs.get("input_ids")])[0])), with_kwargs=True
        )
        for name, encoder in encoders.items()
    ]
    history = tiny.HISTORY[:6] + tiny.HISTORY[:2]  # repeated prompts are encoded once
    try:
        cache = EmbeddingCache(batch_size=4)
        personalizer = Personalizer(family, encoders, adapters, cache)
        personalizer.set_history(history)
        assert {name: sum(r) for name, r in rows.items()} == dict.fromkeys(encoders, 6)
        assert cache.computed == 6 * len(encoders)
        personalizer.condition("a fox in the snow", 0.3)  # the empty queries, then the target
        for r in rows.values():
            r.clear()
        personalizer.condition("a lighthouse at dusk", [0.2, 0.6])
        assert rows == dict.fromkeys(encoders, [1])  # a new target: one pass per encoder, all layers and pooled
    finally:
        for hook in hooks:
            hook.remove()
