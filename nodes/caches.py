"""How the nodes use the caches of the pack's state (nodes/state.py, DrumState).

- `state.embeddings`: encoder outputs per (encoder fingerprint, layer, prompt). In memory; also on
  disk when the environment variable DRUM_CACHE_DIR names a folder ("user" = ComfyUI's user folder
  + /drum-cache). Changing only the target text or the degree re-encodes no history prompt.
- `state.personalizers`: the last PERSONALIZERS_KEPT Personalizers (their reference keys/values),
  keyed by (adapters, history, encoder fingerprints, layer). Their keys/values sit on the adapters'
  device only while in use and on the text encoders' offload device between runs, so a cached
  history never pins GPU memory. Cost per history prompt (fp32, published adapters): L 4.7 MB, H
  6.3 MB, bigG 7.9 MB, T5 21 MB per layer read (SDXL reads L once and bigG twice, SD3 L and bigG twice).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence

import comfy.model_management
import torch

from drum_core.personalizer import Personalizer, encoder_layers, first_clip

from . import clip_bridge
from .state import DrumState


def first_clip_encoder(opened: clip_bridge.OpenedClip) -> clip_bridge.ComfySubEncoder:
    """The opened CLIP's first CLIP encoder (the coreset's: CLIP-L, else CLIP-H for SD2, else bigG), ready to encode."""
    return opened.encoders[first_clip(opened.encoders)]


def pooled_history_features(state: DrumState, opened: clip_bridge.OpenedClip, prompts: Sequence[str]) -> torch.Tensor:
    """[N, P] pooled features of `prompts` from the CLIP's first CLIP encoder (the coreset's), cached, with progress.

    The same encoder pass caches that encoder's states at the layers the family's adapter reads, so the
    picked references are not encoded again (one pass per history prompt).
    """
    encoders, family = opened.encoders, opened.family
    name = first_clip(encoders)
    layers = encoder_layers(family, name, encoders[name].kind, clip_bridge.token_layer(encoders[name].clip, family))
    return state.embeddings.encode(
        encoders[name], prompts, features=True, progress=clip_bridge.progress_reporter(), cache_layers=layers
    ).features


@contextlib.contextmanager
def personalizer(state: DrumState, key: Hashable, build: Callable[[], Personalizer]) -> Iterator[Personalizer]:
    """The Personalizer `state` keeps for `key`, else `build()` (which encodes the history) kept for later.

    Inside the block its reference keys/values are on the adapters' device; afterwards they go
    back to the offload device (also when the run fails or is interrupted).
    """
    chosen = state.personalizers.get(key)
    if chosen is not None:
        chosen.place_references(lambda name: chosen.adapters[name].device)
    else:
        chosen = state.personalizers.put(key, build())
    try:
        yield chosen
    finally:
        offload = comfy.model_management.text_encoder_offload_device()
        chosen.place_references(lambda _name: offload)
