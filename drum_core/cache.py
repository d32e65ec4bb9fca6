"""Encodings of history prompts, computed once per (encoder, layer, prompt) and reused.

In memory (an LRU bounded in bytes) and, with a directory, on disk as one safetensors file
per entry, written atomically. An unreadable or mismatched entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

import torch

from .atomic import save_safetensors
from .backend import TextEncoderBackend

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
POOLED = "pooled"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Memory + optional disk cache of per-prompt encoder outputs."""

    def __init__(self, directory: str | os.PathLike | None = None, max_memory_bytes: int = 2 << 30, batch_size: int = 16):
        self.directory = os.fspath(directory) if directory is not None else None
        self.max_memory_bytes = max_memory_bytes
        self.batch_size = batch_size
        self._memory: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()
        self._memory_bytes = 0
        self.computed = 0  # prompts actually run through an encoder (for tests and stats)

    # ------------------------------------------------------------------ public
    def hidden_states(
        self, backend: TextEncoderBackend, prompts: Sequence[str], layer: int = -1, progress: Progress | None = None
    ) -> torch.Tensor:
        """Raw states [N, T, E] of `layer` (see TextEncoderBackend.hidden_states)."""
        return self._lookup(backend, f"layer{layer}", prompts, lambda batch: backend.hidden_states(batch, layer), progress)

    def pooled_features(self, backend: TextEncoderBackend, prompts: Sequence[str], progress: Progress | None = None) -> torch.Tensor:
        """Pooled features [N, P] (see TextEncoderBackend.pooled_features)."""
        return self._lookup(backend, POOLED, prompts, backend.pooled_features, progress)

    # ------------------------------------------------------------------ internals
    def _lookup(self, backend, what: str, prompts: Sequence[str], encode, progress: Progress | None) -> torch.Tensor:
        if not prompts:
            raise ValueError("no prompts to encode")
        found: dict[int, torch.Tensor] = {}
        missing: list[int] = []
        for i, prompt in enumerate(prompts):
            entry = self._get(backend.fingerprint, what, prompt)
            if entry is None:
                missing.append(i)
            else:
                found[i] = entry
        total = len(prompts)
        done = total - len(missing)
        if progress is not None:
            progress(done, total)
        occurrences = Counter(prompts[i] for i in missing)  # each missing prompt is encoded once
        unique = list(occurrences)
        computed: dict[str, torch.Tensor] = {}
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            with torch.inference_mode():
                out = encode(batch).detach().float().cpu()
            self.computed += len(batch)
            for prompt, value in zip(batch, out):
                value = value.clone()
                computed[prompt] = value
                self._put(backend.fingerprint, what, prompt, value)
            done += sum(occurrences[prompt] for prompt in batch)
            if progress is not None:
                progress(done, total)
        for i in missing:
            found[i] = computed[prompts[i]]
        return torch.stack([found[i] for i in range(total)])

    def _path(self, fingerprint: str, what: str, prompt: str) -> str:
        digest = _digest(prompt)
        return os.path.join(self.directory, _digest(fingerprint)[:16], what, digest[:2], digest + ".safetensors")

    def _get(self, fingerprint: str, what: str, prompt: str) -> torch.Tensor | None:
        key = (fingerprint, what, prompt)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.directory is None:
            return None
        path = self._path(fingerprint, what, prompt)
        if not os.path.exists(path):
            return None
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
                value = f.get_tensor("value")
            if meta.get("prompt") != prompt or meta.get("fingerprint") != fingerprint:
                raise ValueError("entry belongs to another prompt or encoder")
        except Exception as error:  # corrupt, truncated, foreign: rebuild
            log.warning("DrUM cache: rebuilding %s (%s)", path, error)
            os.remove(path)
            return None
        self._remember(key, value)
        return value

    def _put(self, fingerprint: str, what: str, prompt: str, value: torch.Tensor) -> None:
        self._remember((fingerprint, what, prompt), value)
        if self.directory is None:
            return
        path = self._path(fingerprint, what, prompt)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_safetensors({"value": value}, path, {"prompt": prompt, "fingerprint": fingerprint})

    def _remember(self, key, value: torch.Tensor) -> None:
        if key in self._memory:
            return
        self._memory[key] = value
        self._memory_bytes += value.numel() * value.element_size()
        while self._memory_bytes > self.max_memory_bytes and len(self._memory) > 1:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= old.numel() * old.element_size()
