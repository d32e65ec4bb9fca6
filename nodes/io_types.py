"""The custom io types that travel between the DrUM nodes: DRUM_HISTORY, DRUM_PECA, DRUM_DEGREES.

Each type is an `io.Custom` socket plus the plain dataclass it carries, treated as immutable:
a node makes a new one rather than changing its input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from comfy_api.latest import io

from drum_core.history import History
from drum_core.peca import PeCA
from drum_core.profiles import Profile

AUTO = "auto"
NONE = "none"

DrumHistoryType = io.Custom("DRUM_HISTORY")
DrumPeCAType = io.Custom("DRUM_PECA")
DrumDegreesType = io.Custom("DRUM_DEGREES")


@dataclass(frozen=True)
class DrumHistory:
    """A DRUM_HISTORY: the prompts the conditioner uses as references (with intensities p_i)."""

    history: History
    profile: Profile | None = None  # the full history with its features and picks (Coreset Sampler, Profile Load)

    @property
    def digest(self) -> str:
        """Identifies prompts + intensities (keys the reference-state cache)."""
        digest = hashlib.sha256()
        for prompt, intensity in zip(self.history.prompts, self.history.intensities):
            digest.update(f"{intensity!r}\0{prompt}\0".encode())
        return digest.hexdigest()[:32]

    def reference_features(self, fingerprint: str) -> torch.Tensor | None:
        """[R, P] pooled features of `history`'s prompts from the profile, when it holds them for encoder `fingerprint`."""
        return None if self.profile is None else self.profile.features_of(self.history.prompts, fingerprint)

    def preview(self, limit: int = 50) -> list[dict]:
        """[{"prompt", "weight"}] of the first `limit` prompts, for the web UI."""
        return [{"prompt": p, "weight": w} for p, w in list(zip(self.history.prompts, self.history.intensities))[:limit]]


@dataclass(frozen=True)
class AdapterChoice:
    """A DRUM_PECA: per slot ("L", "H", "bigG", "T5") a loaded adapter, "auto" or "none".

    "auto" is resolved against the CLIP's encoders at conditioning time (`nodes/adapters.py`).
    """

    slots: dict[str, PeCA | str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # slot -> file name, for messages and cache keys


@dataclass(frozen=True)
class Degrees:
    """A DRUM_DEGREES: one personalization degree alpha per image of the batch."""

    values: tuple[float, ...]
