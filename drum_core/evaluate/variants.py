"""The rows of the evaluation table: the base model, DrUM, its two ablations and two controls; the "no guidance" adapter.

Controls (how much of DrUM's gain is the user's own): "other_user" builds each user's profile from
another user's history (a fixed derangement: the next user in the data set's order, the last
taking the first's); "shuffled" from the user's own history with every prompt's characters
permuted (drum_core.taste.shuffled_history: the words, and the taste, are gone).
"""

from __future__ import annotations

from torch import nn

from ..defaults import DEGREE
from ..peca import PeCA

VARIANTS = ("base", "drum", "no_sampling", "no_guidance", "other_user", "shuffled")
LABELS = {
    "base": "base model",
    "drum": "DrUM",
    "no_sampling": "DrUM, no sampling",
    "no_guidance": "DrUM, no guidance",
    "other_user": "DrUM, other user's history",
    "shuffled": "DrUM, shuffled history",
}


class NoGuidance(PeCA):
    """The adapter with guidance off (PeCA.forward(..., guidance=False)): one softmax over
    [target | ref_1 | ... | ref_R] in every block; alpha and the intensities are ignored.
    It shares `adapter`'s modules and parameters (nothing is copied)."""

    def __init__(self, adapter: PeCA):
        nn.Module.__init__(self)  # not PeCA.__init__: the blocks are adapter's own, not new ones
        self.config = adapter.config
        self.base_query = adapter.base_query
        for name, module in adapter.named_children():
            self.add_module(name, module)
        self.source = f"{adapter.source or adapter.config.name} (no guidance)"
        self.thread_memory = adapter.thread_memory

    def forward(self, query, target, references=None, intensities=None, degree=DEGREE, guidance=False, pooled_only=False):
        """As PeCA.forward, always without guidance."""
        return super().forward(query, target, references, intensities, degree, guidance=False, pooled_only=pooled_only)
