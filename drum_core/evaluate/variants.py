"""The rows of the evaluation table: the base model, DrUM and its two ablations; the "no guidance" adapter."""

from __future__ import annotations

import torch
from torch import nn

from ..peca import PeCA, ReferenceState

VARIANTS = ("base", "drum", "no_sampling", "no_guidance")
LABELS = {"base": "base model", "drum": "DrUM", "no_sampling": "DrUM, no sampling", "no_guidance": "DrUM, no guidance"}


class NoGuidance(nn.Module):
    """The adapter with guidance off (PeCA.forward(..., guidance=False)): one softmax over
    [target | ref_1 | ... | ref_R] in every block; alpha and the intensities are ignored."""

    def __init__(self, adapter: PeCA):
        super().__init__()
        self.adapter = adapter
        self.config = adapter.config
        self.source = f"{getattr(adapter, 'source', adapter.config.name)} (no guidance)"

    @property
    def dtype(self) -> torch.dtype:
        return self.adapter.dtype

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def encode_references(self, references: torch.Tensor) -> ReferenceState:
        return self.adapter.encode_references(references)

    def forward(self, query, target, references=None, weights=None, alpha=0.3):
        """As PeCA.forward, without guidance."""
        return self.adapter(query, target, references, weights, alpha, guidance=False)
