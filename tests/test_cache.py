"""EmbeddingCache: computed once per (encoder, layer, prompt), reused in memory and on disk."""

from pathlib import Path

import pytest
import torch

from drum_core import EmbeddingCache, tiny
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
