"""What PeCA needs from a frozen text encoder, whoever hosts it.

Three hosts implement :class:`TextEncoderBackend`: transformers / open_clip encoders
(`drum_core.encoders`), and ComfyUI's CLIP sub-encoders (`nodes/clip_bridge.py`). The family
assembly (`drum_core.personalizer`) only talks to this protocol, so the numbers it computes
do not depend on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

CLIP_TOKENS = 77
T5_TOKENS = 256


@dataclass
class Encoding:
    """What one encoder pass over N prompts yields.

    `states[layer]`: raw states [N, T, E] of each requested layer (see `TextEncoderBackend.hidden_states`);
    `eos`: [N, E] the raw top-layer state at each prompt's pooling (EOS) position, before the final
    norm, when a backend was asked for it (`encode(..., eos=True)`; else None);
    `features`: [N, P] the pooled features, project(final_norm(eos)) (`TextEncoderBackend.pooled_features`),
    when `EmbeddingCache.encode(..., features=True)` was asked for them (else None; a backend never sets them).
    """

    states: dict[int, torch.Tensor]
    eos: torch.Tensor | None = None
    features: torch.Tensor | None = None


@runtime_checkable
class TextEncoderBackend(Protocol):
    """One frozen text encoder seen the way PeCA needs it.

    Layers are counted from the encoder's top as its host pipeline defines it: -1 is the
    "last layer" of docs/method.md (for SD2 that is layer 23 of OpenCLIP ViT-H), -2 the one below.
    """

    kind: Literal["clip", "t5"]
    width: int  # E, the hidden width
    tokens_per_prompt: int  # T: 77 (CLIP) or 256 (T5)
    fingerprint: str  # identifies weights + layer conventions; keys the embedding cache

    def encode(self, prompts: Sequence[str], layers: Sequence[int] = (-1,), eos: bool = False) -> Encoding:
        """ONE forward pass: the raw states of every layer in `layers` and, if `eos`, the raw
        top-layer pooling states (`Encoding`). Equal to the single-layer calls, value for value.
        """
        ...

    def hidden_states(self, prompts: Sequence[str], layer: int = -1) -> torch.Tensor:
        """Raw states [N, T, E] float32, every prompt cut/padded to exactly T tokens.

        CLIP: the hidden states of `layer` BEFORE the final LayerNorm.
        T5: `last_hidden_state` (T5's own final RMSNorm applied); `layer` is ignored.
        """
        ...

    def empty_query(self) -> torch.Tensor:
        """The query that replaces `base_query`.

        CLIP: [1, 78, E] = raw top-layer states of "" plus, as the 78th token, the raw
        top-layer state at its EOS position. T5: [1, 256, E] = hidden_states([""]).
        """
        ...

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """The encoder's final LayerNorm ([..., E] -> [..., E]); identity for T5."""
        ...

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """The text projection the host applies to pooled vectors ([N, E] -> [N, P]).

        Identity where the host uses unprojected pooled vectors for this encoder.
        """
        ...

    def pooled_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Coreset features [N, P]: project(final_norm(raw top-layer EOS state)), i.e. of `encode(..., eos=True).eos`."""
        ...
