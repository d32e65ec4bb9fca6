"""DrumState: everything the node pack keeps between node runs, in ONE object owned by the extension.

ComfyUI calls a node's classmethods on a locked clone of its class, and ComfyUI 0.3.75's
`ComfyExtension` hands the nodes nothing. So `DrUMExtension` creates one `DrumState` and gives
ComfyUI its node classes bound to it (`CheckedNode.bound`: a subclass whose `state()` is that
object); a node passes it down to the functions that read or fill it. No module of nodes/ holds a
cache or registry of its own (tests/comfy/test_state.py reads their module globals).

Lifetime: the ComfyUI process. ComfyUI keeps the extension's node classes in its node mappings
until the server exits, and the state with them. `clear()` empties it (the tests, the bench); a
second extension (another `comfy_entrypoint()` call) gets a state of its own.

What it holds, each bounded (docs/comfyui.md "The pack's state" gives the memory costs):
- `embeddings`: encoder outputs per (encoder fingerprint, layer, prompt), EmbeddingCache (2 GiB,
  least recently used out; also on disk when DRUM_CACHE_DIR names a folder).
- `personalizers`: the last PERSONALIZERS_KEPT Personalizers (their references' keys/values).
- `adapters`: the last ADAPTERS_KEPT adapters, each with its file stamp and its ComfyUI ModelPatcher.
- `host_checked`: the last HOST_CHECKS_KEPT (family, encoder fingerprint) pairs that passed
  clip_bridge's host self-check (0.2 kB each; one left out is checked again when it comes back).
- `identities`: identity tokens of the patches, hooks and tensors the encoder fingerprints read
  (drum_core.fingerprint.Identities: entries leave with their objects; at most `limit` kept alive).
- `history_files`: the History Loader's file list (nodes/history.py; one entry per file and folder
  walked, at most HISTORY_FOLDER_DEPTH levels).
- `outputs`: the History from Outputs folder list and scan cache (nodes/outputs_history.py; at most
  FOLDERS_LISTED folders and SCAN_CACHE_ENTRIES images).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import folder_paths

from drum_core.cache import EmbeddingCache
from drum_core.fingerprint import Identities
from drum_core.peca import PeCA
from drum_core.personalizer import Personalizer

from .history import HistoryFileListing
from .outputs_history import OutputsReader

PERSONALIZERS_KEPT = 2  # histories whose reference keys/values stay cached
ADAPTERS_KEPT = 4  # adapters cached at once: one per slot (L, H, bigG, T5)
HOST_CHECKS_KEPT = 256  # (family, encoder fingerprint) pairs remembered as checked

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """A mapping that keeps at most `limit` entries, the least recently used leaving first (`get` and `put` use one)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a Kept mapping keeps at least one entry, not {limit}")
        self.limit = limit
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        """The keys, least recently used first (their order unchanged)."""
        return iter(list(self._entries))

    def get(self, key: K) -> V | None:
        """The entry of `key` (now the most recently used), or None."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: K, value: V) -> V:
        """Keep `value` under `key` as the most recently used entry; the least recently used leave beyond `limit`."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
        return value

    def values(self) -> list[V]:
        """The entries, least recently used first (their order unchanged)."""
        return list(self._entries.values())

    def items(self) -> list[tuple[K, V]]:
        """(key, entry) pairs, least recently used first (their order unchanged)."""
        return list(self._entries.items())

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class KeptAdapter:
    """An adapter of the state: its file's (size, mtime_ns) (None: handed in, not read from a file) and the ModelPatcher
    under which ComfyUI loads and offloads it (made at its first use, nodes/adapters.py `model_patcher`)."""

    stamp: tuple[int, int] | None
    adapter: PeCA
    patcher: Any = None  # comfy.model_patcher.ModelPatcher


def cache_directory() -> str | None:
    """Where encoder outputs are also kept on disk: the DRUM_CACHE_DIR folder ("user": ComfyUI's user folder +
    /drum-cache), or None (memory only)."""
    setting = os.environ.get("DRUM_CACHE_DIR", "").strip()
    if not setting:
        return None
    if setting == "user":
        return os.path.join(folder_paths.get_user_directory(), "drum-cache")
    return setting


class DrumState:
    """The pack's caches and registries (module docstring): one per extension, for the life of the ComfyUI process."""

    def __init__(
        self,
        directory: str | None = None,
        personalizers_kept: int = PERSONALIZERS_KEPT,
        adapters_kept: int = ADAPTERS_KEPT,
        host_checks_kept: int = HOST_CHECKS_KEPT,
    ) -> None:
        self.embeddings = EmbeddingCache(directory)
        self.personalizers: Kept[Hashable, Personalizer] = Kept(personalizers_kept)
        self.adapters: Kept[Hashable, KeptAdapter] = Kept(adapters_kept)
        self.host_checked: Kept[tuple[str, str], bool] = Kept(host_checks_kept)
        self.identities = Identities()
        self.history_files = HistoryFileListing()
        self.outputs = OutputsReader()

    @classmethod
    def for_comfyui(cls) -> DrumState:
        """The state of the extension ComfyUI loads (its disk cache where DRUM_CACHE_DIR says)."""
        return cls(cache_directory())

    def clear(self) -> None:
        """Forget everything kept in memory (files of the disk cache stay); the next runs compute and check again."""
        self.embeddings.clear()
        self.personalizers.clear()
        self.adapters.clear()
        self.host_checked.clear()
        self.identities = Identities()  # fingerprints change: nothing computed before can match again
        self.history_files.invalidate()
        self.outputs = OutputsReader()  # its scan cache file stays, read again when asked for
