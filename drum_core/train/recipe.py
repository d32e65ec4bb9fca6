"""The published training recipe: options, adapter size, initialisation, optimizer groups, schedule, loss.

    query      = the frozen encoder's empty-prompt embedding (backend.empty_query())
    key/value  = the caption's own raw token states [T, E]; no references, no alpha
    loss       = mean_t(1 - cos(tokens_t, states_t)) + (1 - cos(pooled, raw EOS state))   (CLIP)
                 mean_t(1 - cos(tokens_t, states_t))                                      (T5)

The defaults of TrainOptions are the published recipe (see the package docstring).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backend import TextEncoderBackend
from ..peca import PeCA

# options that change the numbers: a checkpoint only resumes a run that agrees on these
RECIPE_OPTIONS = ("batch_size", "epochs", "lr", "weight_decay", "betas", "eps", "warmup_steps", "dropout", "seed", "layers")


@dataclass
class TrainOptions:
    """Everything a training run is configured by (the command-line flags)."""

    out: str
    batch_size: int = 256
    micro_batch: int | None = None  # per-process micro-batch (gradient accumulation); None = whole slice
    epochs: int = 20
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 2500
    dropout: float = 0.1
    seed: int = 42
    layers: int = 10
    shuffle_buffer: int = 100_000  # streamed captions: size of the shuffle buffer
    save_every: int = 1000
    validate_every: int = 1000
    max_steps: int | None = None  # stop (checkpoint, adapter and loss plot written) after this many optimizer steps in all
    precision: str = "auto"  # "bf16" autocast, "fp32" (any drum_core.dtypes spelling), or "auto" (bf16 on CUDA)
    export: str | None = None  # adapter file; default <out>/<name>.safetensors
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        """ValueError naming the option (and its `drum train` flag) for a value no run can use, before anything loads."""

        def need(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)!r}")

        for name in ("batch_size", "epochs", "layers", "shuffle_buffer", "save_every", "validate_every"):
            need(name, _whole(getattr(self, name), 1), "a whole number >= 1")
        for name in ("micro_batch", "max_steps"):
            need(name, getattr(self, name) is None or _whole(getattr(self, name), 1), "a whole number >= 1")
        need("warmup_steps", _whole(self.warmup_steps, 0), "a whole number >= 0")
        need("seed", _whole(self.seed, 0), "a whole number >= 0")
        need("lr", _finite(self.lr) and self.lr > 0, "a finite number > 0")
        need("eps", _finite(self.eps) and self.eps > 0, "a finite number > 0")
        need("weight_decay", _finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0")
        need("dropout", _finite(self.dropout) and 0 <= self.dropout < 1, "in [0, 1)")
        need("betas", len(self.betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in self.betas), "two numbers in [0, 1)")


def _whole(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def recipe_values(options: TrainOptions) -> dict:
    """The RECIPE_OPTIONS of `options`, as a checkpoint stores them (betas a list)."""
    values = asdict(options)
    values["betas"] = list(values["betas"])
    return {k: values[k] for k in RECIPE_OPTIONS}


def release_init(model: PeCA) -> None:
    """The release's initialisation: Xavier-uniform Linear weights, zero biases, base_query N(0, 0.02)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(model.base_query, std=0.02)


def parameter_groups(model: PeCA, weight_decay: float) -> list[dict]:
    """Weight decay on Linear weights only; norms and biases without; base_query frozen, excluded."""
    model.base_query.requires_grad_(False)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim >= 2 and "norm" not in name else no_decay).append(parameter)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based), the release's cosine_lr."""
    s = step + 1
    if s < warmup:
        return (s + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))


def caption_targets(backend: TextEncoderBackend, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the adapter reconstructs: raw last-layer states [N, T, E] and (CLIP) the raw EOS state [N, E].

    Backends with `token_ids` / `eos_positions` (HFClipBackend) pick the EOS state from the
    same encoder pass; others are asked for `raw_pooled(prompts)`.
    """
    captions = list(captions)
    with torch.no_grad():
        states = backend.hidden_states(captions, -1).float().clone()  # clone: no inference tensors in autograd
        if backend.kind == "t5":
            return states, None
        if hasattr(backend, "eos_positions") and hasattr(backend, "token_ids"):
            positions = backend.eos_positions(backend.token_ids(captions)).to(states.device)
            return states, states[torch.arange(states.shape[0], device=states.device), positions]
        if not hasattr(backend, "raw_pooled"):
            raise TypeError(f"{type(backend).__name__} has neither eos_positions nor raw_pooled: CLIP training needs the raw EOS state")
        return states, backend.raw_pooled(captions).float().clone()


def reconstruction_loss(model: nn.Module, query: torch.Tensor, states: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    """Per-caption loss [N]: query [1, S, E], states [N, T, E], eos [N, E] (CLIP) or None (T5)."""
    tokens, pooled = model(query, states)
    loss = 1 - F.cosine_similarity(tokens.float(), states.float(), dim=-1).mean(-1)
    if eos is not None:
        loss = loss + 1 - F.cosine_similarity(pooled.float(), eos.float(), dim=-1)
    return loss
