"""Encodings of history prompts, computed once per (encoder, layer, prompt) and reused.

Every layer a caller needs (and the pooled features) comes from ONE encoder pass per prompt
(`EmbeddingCache.encode`); each is stored as its own entry.

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
from .backend import Encoding, TextEncoderBackend

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
    def clear(self) -> None:
        """Forget every entry held in memory (files in `directory` stay: they are read back when asked for)."""
        self._memory.clear()
        self._memory_bytes = 0

    def encode(
        self,
        backend: TextEncoderBackend,
        prompts: Sequence[str],
        layers: Sequence[int] = (),
        features: bool = False,
        progress: Progress | None = None,
        cache_layers: Sequence[int] = (),
    ) -> Encoding:
        """Raw states [N, T, E] of each of `layers` and, if `features`, the pooled features [N, P]
        (`Encoding.features`: `TextEncoderBackend.pooled_features`; `Encoding.eos` stays None).

        A prompt missing any of these entries runs through the encoder once, for all of them and for
        `cache_layers`: layers cached from that same pass but not returned (the coreset's feature pass
        keeps the states its picked references will need, without stacking [N, T, E] it does not use).
        """
        if not prompts:
            raise ValueError("no prompts to encode")
        layers = list(dict.fromkeys(layers))
        computed_layers = list(dict.fromkeys([*layers, *cache_layers]))
        entries = [f"layer{layer}" for layer in layers] + ([POOLED] if features else [])
        if not entries:
            raise ValueError("nothing to encode: no layers and no pooled features asked for")
        fingerprint = backend.fingerprint
        found: dict[str, dict[str, torch.Tensor]] = {}  # prompt -> entry -> value
        for prompt in dict.fromkeys(prompts):
            values = {what: self._get(fingerprint, what, prompt) for what in entries}
            if all(value is not None for value in values.values()):
                found[prompt] = values
        occurrences = Counter(prompt for prompt in prompts if prompt not in found)  # each missing prompt is encoded once
        total = len(prompts)
        done = total - sum(occurrences.values())
        if progress is not None:
            progress(done, total)
        unique = list(occurrences)
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start : start + self.batch_size]
            with torch.inference_mode():
                encoding = backend.encode(batch, computed_layers, eos=features)
                outputs = {f"layer{layer}": encoding.states[layer] for layer in computed_layers}
                if features:
                    outputs[POOLED] = backend.project(backend.final_norm(encoding.eos))
            self.computed += len(batch)
            for what, out in outputs.items():
                out = out.detach().float().cpu()
                for prompt, value in zip(batch, out):
                    value = value.clone()
                    found.setdefault(prompt, {})[what] = value
                    self._put(fingerprint, what, prompt, value)
            done += sum(occurrences[prompt] for prompt in batch)
            if progress is not None:
                progress(done, total)
        states = {layer: torch.stack([found[prompt][f"layer{layer}"] for prompt in prompts]) for layer in layers}
        return Encoding(states, features=torch.stack([found[prompt][POOLED] for prompt in prompts]) if features else None)

    def hidden_states(
        self, backend: TextEncoderBackend, prompts: Sequence[str], layer: int = -1, progress: Progress | None = None
    ) -> torch.Tensor:
        """Raw states [N, T, E] of `layer` (see TextEncoderBackend.hidden_states)."""
        return self.encode(backend, prompts, [layer], progress=progress).states[layer]

    def pooled_features(self, backend: TextEncoderBackend, prompts: Sequence[str], progress: Progress | None = None) -> torch.Tensor:
        """Pooled features [N, P] (see TextEncoderBackend.pooled_features)."""
        return self.encode(backend, prompts, features=True, progress=progress).features

    # ------------------------------------------------------------------ internals

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
