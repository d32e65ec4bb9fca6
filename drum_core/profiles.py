"""A user's profile: a history, the pooled features of its prompts, the coreset picks, and the
fingerprint of the encoder that made the features; saved as one `.safetensors` file.

File layout (docs: docs/histories.md "Profile files"):

    tensors   features     float32 [N, P]  pooled features of every history prompt
              intensities  float64 [N]     preference intensities p_i
              picks        int64   [n]     coreset picks, in pick order (n = 0: nothing sampled)
              timestamps   float64 [N]     seconds since the epoch (only when the history has them)
    metadata  format "drum-profile", version "1", prompts (a JSON list of strings), fingerprint,
              settings (JSON object: how the picks were made), source, content_sha256

`content_sha256` covers every tensor (name, dtype, shape, bytes) and every other metadata entry,
so a truncated or edited file is refused (it detects changes, it is not a signature). Prompts are
JSON strings, read as data only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .atomic import save_safetensors
from .backend import TextEncoderBackend
from .cache import EmbeddingCache
from .history import History, HistoryError

FORMAT = "drum-profile"
VERSION = 1
HASH_KEY = "content_sha256"
TENSORS = ("features", "intensities", "picks")  # required; "timestamps" is optional


class ProfileFormatError(ValueError):
    """A profile file that is not one, is truncated, or was changed after it was saved; names the file."""


@dataclass(frozen=True)
class Profile:
    """history (N prompts), features [N, P] of its prompts, picks (coreset order; [] = none), fingerprint of their encoder.

    `indices`, `prompts`, `intensities` and `total` describe what the coreset kept (what the
    diffusers integration and `drum profile` report); `references` is the history the conditioner
    uses (the picks, or every prompt when nothing was sampled).
    """

    history: History
    features: torch.Tensor
    picks: list[int]
    fingerprint: str
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.history)
        if count and (self.features.dim() != 2 or self.features.shape[0] != count):
            raise ValueError(f"profile features must be [{count}, P] for {count} prompts, got {list(self.features.shape)}")
        bad = [i for i in self.picks if not 0 <= i < count]
        if bad:
            raise ValueError(f"profile picks {bad[:5]} are outside the history's {count} prompts")
        if len(set(self.picks)) != len(self.picks):
            raise ValueError("profile picks repeat a prompt")

    @property
    def total(self) -> int:
        return len(self.history)

    @property
    def indices(self) -> list[int]:
        """The picked history indices, in pick order."""
        return list(self.picks)

    @property
    def prompts(self) -> list[str]:
        """The picked prompts, in pick order."""
        return [self.history.prompts[i] for i in self.picks]

    @property
    def intensities(self) -> list[float]:
        """The picked prompts' intensities p_i, in pick order."""
        return [float(self.history.intensities[i]) for i in self.picks]

    @property
    def references(self) -> History:
        """The prompts the conditioner uses: the picks, or the whole history when nothing was sampled."""
        return self.history.subset(self.picks) if self.picks else self.history

    def as_dict(self) -> dict:
        """JSON-ready form of the picks (what `drum profile --json` prints)."""
        picked = [
            {"rank": rank, "index": index, "intensity": intensity, "prompt": prompt}
            for rank, (index, intensity, prompt) in enumerate(zip(self.indices, self.intensities, self.prompts), 1)
        ]
        return {"total": self.total, **self.settings, "picked": picked}

    def for_encoder(
        self, encoder: TextEncoderBackend, cache: EmbeddingCache | None = None, progress: Callable[[int, int], None] | None = None
    ) -> Profile:
        """This profile with `encoder`'s features: reused when its fingerprint matches, else re-encoded (picks kept)."""
        if encoder.fingerprint == self.fingerprint or not len(self.history):
            return self
        features = (cache if cache is not None else EmbeddingCache()).pooled_features(encoder, self.history.prompts, progress)
        return replace(self, features=features, fingerprint=encoder.fingerprint)

    def features_of(self, prompts: list[str], fingerprint: str) -> torch.Tensor | None:
        """Features [len(prompts), P] of these prompts from the profile, if it holds them all for encoder `fingerprint`."""
        if fingerprint != self.fingerprint:
            return None
        rows = {prompt: i for i, prompt in enumerate(self.history.prompts)}
        if not all(prompt in rows for prompt in prompts):
            return None
        return self.features[[rows[prompt] for prompt in prompts]]

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the profile file at `path` atomically (see the module docstring for the layout)."""
        if not len(self.history):
            raise ValueError("an empty history makes no profile: there is nothing to save")
        tensors = {
            "features": self.features.detach().float().cpu().contiguous(),
            "intensities": torch.tensor(self.history.intensities, dtype=torch.float64),
            "picks": torch.tensor(self.picks, dtype=torch.int64),
        }
        if self.history.timestamps is not None:
            tensors["timestamps"] = torch.tensor(self.history.timestamps, dtype=torch.float64)
        metadata = {
            "format": FORMAT,
            "version": str(VERSION),
            "prompts": json.dumps(self.history.prompts, ensure_ascii=False),
            "fingerprint": self.fingerprint,
            "settings": json.dumps(self.settings, ensure_ascii=False),
            "source": self.history.source,
        }
        metadata[HASH_KEY] = _content_hash(tensors, metadata)
        save_safetensors(tensors, path, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Profile:
        """Read a profile file; ProfileFormatError (naming the file) for a foreign, truncated or changed one."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"profile file {path} not found")
        tensors, metadata = _read(path)

        def fail(problem: str) -> ProfileFormatError:
            return ProfileFormatError(f"profile file {path}: {problem}")

        if metadata.get("format") != FORMAT:
            raise fail(f"not a DrUM profile (no '{FORMAT}' format tag; tensors {sorted(tensors)[:5]})")
        version = metadata.get("version", "")
        if not version.isdigit() or int(version) > VERSION:
            raise fail(f"format version {version!r}; this DrUM reads version {VERSION} and older")
        missing = [f"tensor '{k}'" for k in TENSORS if k not in tensors] + [
            f"metadata '{k}'" for k in ("prompts", "fingerprint", HASH_KEY) if k not in metadata
        ]
        if missing:
            raise fail(f"incomplete, missing {', '.join(missing)}")
        if _content_hash(tensors, metadata) != metadata[HASH_KEY]:
            raise fail(f"its content does not match its {HASH_KEY}: the file was changed after it was saved")
        try:
            prompts = json.loads(metadata["prompts"])
            settings = json.loads(metadata.get("settings", "{}"))
        except json.JSONDecodeError as error:
            raise fail(f"metadata is not valid JSON ({error})") from None
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise fail("'prompts' must be a non-empty JSON list of non-empty strings")
        if not isinstance(settings, dict):
            raise fail("'settings' must be a JSON object")
        count = len(prompts)
        shapes = {"features": 2, "intensities": 1, "picks": 1, "timestamps": 1}
        for name, tensor in tensors.items():
            if name not in shapes:
                raise fail(f"unexpected tensor '{name}'")
            if tensor.dim() != shapes[name] or (name != "picks" and tensor.shape[0] != count):
                raise fail(f"tensor '{name}' has shape {list(tensor.shape)} for {count} prompts")
        if tensors["picks"].dtype != torch.int64 or not tensors["features"].is_floating_point():
            raise fail("'picks' must be int64 and 'features' floating point")
        timestamps = tensors.get("timestamps")
        if timestamps is not None and not all(math.isfinite(t) for t in timestamps.tolist()):
            raise fail("timestamps must be finite")
        try:
            history = History(
                prompts,
                tensors["intensities"].double().tolist(),
                None if timestamps is None else timestamps.double().tolist(),
                metadata.get("source", path),
            )
            return cls(history, tensors["features"].float(), tensors["picks"].tolist(), metadata["fingerprint"], settings)
        except (HistoryError, ValueError) as error:
            raise fail(str(error)) from None


def _read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as error:  # safetensors raises its own error types for truncated or foreign bytes
        raise ProfileFormatError(f"profile file {path}: not a readable safetensors file ({error})") from None
    return tensors, metadata


def _content_hash(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and every metadata entry but the hash itself."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    entries = {k: v for k, v in metadata.items() if k != HASH_KEY}
    digest.update(json.dumps(entries, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()
