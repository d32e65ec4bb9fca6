"""Process-wide caches of the node pack (ComfyUI nodes are stateless classes).

- EMBEDDINGS: encoder outputs per (encoder fingerprint, layer, prompt). In memory; also on disk
  when the environment variable DRUM_CACHE_DIR names a folder ("user" = ComfyUI's user folder
  + /drum-cache). Changing only the target text or the degree re-encodes no history prompt.
- personalizers: the last few Personalizers (their reference keys/values), keyed by
  (adapters, history, encoder fingerprints, layer).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable

import folder_paths

from drum_core.cache import EmbeddingCache
from drum_core.personalizer import Personalizer

PERSONALIZERS_KEPT = 2


def _cache_directory() -> str | None:
    setting = os.environ.get("DRUM_CACHE_DIR", "").strip()
    if not setting:
        return None
    if setting == "user":
        return os.path.join(folder_paths.get_user_directory(), "drum-cache")
    return setting


EMBEDDINGS = EmbeddingCache(_cache_directory())
_personalizers: OrderedDict[Hashable, Personalizer] = OrderedDict()


def personalizer(key: Hashable, build: Callable[[], Personalizer]) -> Personalizer:
    """The cached Personalizer for `key`, else `build()` (which encodes the history) kept for later."""
    if key in _personalizers:
        _personalizers.move_to_end(key)
        return _personalizers[key]
    built = build()
    _personalizers[key] = built
    while len(_personalizers) > PERSONALIZERS_KEPT:
        _personalizers.popitem(last=False)
    return built
