"""PeCA, the Personalized Conditioning Adapter (method.md §2-3).

Module and parameter names match the published files (`weight/{L,H,bigG,T5}.safetensors`)
so loading is a strict `load_state_dict`. Guidance (equation 2) is computed one segment at
a time on fused scaled-dot-product attention:

    out = (1 - alpha) * Attn(q, K_target, V_target)
          + alpha * sum_i (p_i / sum_j p_j) * Attn(q, K_i, V_i)

so the [heads, S, T * (1 + R)] score tensor is never built.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEAD_WIDTH = 64
PUBLISHED_SIZES = {  # name -> (kind, encoder width E)
    "L": ("clip", 768),
    "H": ("clip", 1024),
    "bigG": ("clip", 1280),
    "T5": ("t5", 4096),
}
FORMAT_TAG = "drum-peca"


class PeCAFormatError(ValueError):
    """A file or state dict that is not a PeCA in the published layout."""


@dataclass(frozen=True)
class PeCAConfig:
    """Sizes of one adapter; all inferable from its tensors."""

    kind: str  # "clip" or "t5"
    encoder_width: int  # E, width of the encoder states it reads and writes
    width: int  # d, width inside the blocks (E for CLIP, E / 4 for T5)
    ffn_width: int  # F, the narrowing feed-forward width
    layers: int
    query_tokens: int  # 78 (CLIP: 77 + pooled) or 256 (T5)

    @property
    def heads(self) -> int:
        return self.width // HEAD_WIDTH

    @property
    def name(self) -> str | None:
        """ "L", "H", "bigG" or "T5" for the published sizes, else None."""
        for name, (kind, width) in PUBLISHED_SIZES.items():
            if (kind, width) == (self.kind, self.encoder_width):
                return name
        return None

    @classmethod
    def published(cls, name: str) -> PeCAConfig:
        """The configuration of a published adapter ("L", "H", "bigG", "T5")."""
        kind, width = PUBLISHED_SIZES[name]
        if kind == "t5":
            return cls("t5", width, width // 4, width // 4, 10, 256)
        return cls("clip", width, width, width // 4, 10, 78)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


@dataclass
class ReferenceState:
    """Per-layer keys and values of R references, reusable across targets and alphas.

    `keys[l]`, `values[l]`: [R, heads, T, d_head] for block l.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def count(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0


class GuidedCrossAttention(nn.Module):
    """Multi-head cross-attention with DrUM guidance (separate softmax per prompt)."""

    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.heads = width // HEAD_WIDTH
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, d] -> [N, heads, T, d_head]."""
        n, t, _ = x.shape
        return x.view(n, t, self.heads, -1).transpose(1, 2)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [N, T, d] -> keys, values [N, heads, T, d_head]."""
        return self.split_heads(self.key(context)), self.split_heads(self.value(context))

    def forward(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        references: tuple[torch.Tensor, torch.Tensor] | None,
        target_share: torch.Tensor,
        reference_shares: torch.Tensor | None,
    ) -> torch.Tensor:
        """x [B, S, d], target [B, T, d]; references: keys/values [R, heads, T, d_head].

        target_share [B] = 1 - alpha; reference_shares [B, R] = alpha * p_i / sum p.
        """
        b, s, d = x.shape
        q = self.split_heads(self.query(x))  # [B, heads, S, d_head]
        k_t, v_t = self.keys_values(target)
        out = F.scaled_dot_product_attention(q, k_t, v_t)  # [B, heads, S, d_head]
        if references is not None and reference_shares is not None:
            k_r, v_r = references
            r = k_r.shape[0]
            # every reference attends to every batch row: [R, heads, B*S, d_head]
            q_all = q.transpose(0, 1).reshape(1, self.heads, b * s, -1).expand(r, -1, -1, -1)
            per_ref = F.scaled_dot_product_attention(q_all, k_r, v_r)
            per_ref = per_ref.view(r, self.heads, b, s, -1)
            mixed = torch.einsum("rhbsc,br->bhsc", per_ref, reference_shares)
            out = out * target_share.view(b, 1, 1, 1) + mixed
        out = out.transpose(1, 2).reshape(b, s, d)
        return self.dropout(self.proj(out))


class Block(nn.Module):
    """Post-LN cross-attention block: no self-attention, narrowing QuickGELU FFN."""

    def __init__(self, width: int, ffn_width: int, dropout: float = 0.0):
        super().__init__()
        self.attn = GuidedCrossAttention(width, dropout)
        self.norm1 = nn.LayerNorm(width, eps=1e-5)
        self.ff = nn.Sequential(nn.Linear(width, ffn_width), QuickGELU(), nn.Linear(ffn_width, width))
        self.norm2 = nn.LayerNorm(width, eps=1e-5)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, target, references, target_share, reference_shares):
        x = self.norm1(x + self.attn(x, target, references, target_share, reference_shares))
        return self.norm2(x + self.dropout(self.ff(x)))


class PeCA(nn.Module):
    """One adapter for one text encoder (CLIP-L, OpenCLIP-H/bigG, T5-XXL or custom sizes)."""

    def __init__(self, config: PeCAConfig, dropout: float = 0.0):
        super().__init__()
        self.config = config
        d = config.width
        self.base_query = nn.Parameter(torch.zeros(1, config.query_tokens, d))  # kept, unused
        if config.kind == "t5":
            self.pre_proj = nn.Linear(config.encoder_width, d)
            self.post_proj = nn.Linear(d, config.encoder_width)
        self.tf = nn.ModuleList(Block(d, config.ffn_width, dropout) for _ in range(config.layers))

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> PeCA:
        """Build an adapter from tensors in the published layout; strict keys and shapes."""
        config = infer_config(state_dict, source)
        model = cls(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        given = {k: tuple(v.shape) for k, v in state_dict.items()}
        missing = sorted(set(expected) - set(given))
        unexpected = sorted(set(given) - set(expected))
        misshaped = [f"{k} {given[k]} (expected {expected[k]})" for k in expected if k in given and given[k] != expected[k]]
        if missing or unexpected or misshaped:
            problems = []
            if missing:
                problems.append(f"missing keys: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}")
            if unexpected:
                problems.append(f"unexpected keys: {', '.join(unexpected[:12])}{' ...' if len(unexpected) > 12 else ''}")
            if misshaped:
                problems.append(f"mis-shaped: {', '.join(misshaped[:12])}")
            raise PeCAFormatError(f"{source}: not a complete PeCA ({config.kind}, {config.layers} blocks): " + "; ".join(problems))
        # fp32 math (float64 tensors stay float64, for oracle tests)
        dtype = torch.float64 if state_dict["base_query"].dtype == torch.float64 else torch.float32
        model.to(dtype).load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, strict=True)
        return model.eval()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> PeCA:
        """Load a `.safetensors` adapter file (never unpickles)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"PeCA adapter file not found: {path}")
        if not path.endswith(".safetensors"):
            raise PeCAFormatError(f"{path}: adapters are read from .safetensors files only")
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise PeCAFormatError(f"{path}: unreadable safetensors file ({error})") from error
        model = cls.from_state_dict(tensors, source=path)
        model.source = path
        return model

    def save(self, path: str | os.PathLike) -> None:
        """Write the published layout (+ metadata), atomically."""
        from safetensors.torch import save_file

        path = os.fspath(path)
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {"format": FORMAT_TAG, "config": json.dumps(self.config.__dict__)}
        tmp = f"{path}.tmp-{os.getpid()}"
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ inference
    def _context(self, states: torch.Tensor) -> torch.Tensor:
        """Encoder states [N, T, E] -> block width [N, T, d]."""
        states = states.to(self.base_query.dtype)
        return self.pre_proj(states) if self.config.kind == "t5" else states

    def _check_states(self, name: str, states: torch.Tensor) -> None:
        if states.dim() != 3 or states.shape[-1] != self.config.encoder_width:
            raise ValueError(
                f"PeCA {self.config.name or self.config.kind}: {name} must be [N, T, {self.config.encoder_width}], got {list(states.shape)}"
            )

    @torch.no_grad()
    def encode_references(self, references: torch.Tensor) -> ReferenceState:
        """references [R, T, E] -> per-block keys/values, reused across targets and alphas."""
        self._check_states("references", references)
        context = self._context(references)
        keys, values = [], []
        for block in self.tf:
            k, v = block.attn.keys_values(context)
            keys.append(k)
            values.append(v)
        return ReferenceState(keys, values)

    def forward(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        references: torch.Tensor | ReferenceState | None = None,
        weights: torch.Tensor | Sequence[float] | None = None,
        alpha: float | Sequence[float] | torch.Tensor = 0.3,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fuse a target condition with reference conditions.

        query [1, S, E] (empty-prompt states), target [B, T, E], references [R, T, E] or a
        ReferenceState, weights [R] preference intensities (default all 1), alpha a float
        or one value per batch row. Returns CLIP (tokens [B, 77, E], pooled [B, E]) raw,
        or T5 (tokens [B, 256, E], None).
        """
        self._check_states("query", query)
        self._check_states("target", target)
        b = target.shape[0]
        dtype = self.base_query.dtype
        if isinstance(references, torch.Tensor):
            references = self.encode_references(references) if references.shape[0] else None
        if references is not None and references.count == 0:
            references = None
        alphas = _alphas(alpha, b, dtype, target.device)
        target_share = 1.0 - alphas if references is not None else torch.ones_like(alphas)
        reference_shares = None
        if references is not None:
            p = _intensities(weights, references.count, dtype, target.device)
            if p.sum() > 0:
                reference_shares = alphas[:, None] * (p / p.sum())[None, :]  # [B, R]
            else:  # all p_i = 0 behaves like alpha = 0
                target_share = torch.ones_like(alphas)
        x = self._context(query).expand(b, -1, -1)
        context = self._context(target)
        for i, block in enumerate(self.tf):
            kv = (references.keys[i], references.values[i]) if reference_shares is not None else None
            x = block(x, context, kv, target_share, reference_shares)
        if self.config.kind == "t5":
            return self.post_proj(x), None
        return x[:, :-1], x[:, -1]


def _alphas(alpha, batch: int, dtype, device) -> torch.Tensor:
    """alpha (float or [B]) -> [B], checked to lie in [0, 1]."""
    alphas = torch.as_tensor(alpha, dtype=dtype, device=device).reshape(-1)
    if alphas.numel() == 1:
        alphas = alphas.expand(batch)
    if alphas.numel() != batch:
        raise ValueError(f"alpha has {alphas.numel()} values for a batch of {batch} targets")
    if not torch.all((alphas >= 0) & (alphas <= 1)):
        raise ValueError(f"alpha must lie in [0, 1], got {alphas.tolist()}")
    return alphas


def _intensities(weights, count: int, dtype, device) -> torch.Tensor:
    """Preference intensities [R]: finite, non-negative; default all 1."""
    if weights is None:
        return torch.ones(count, dtype=dtype, device=device)
    p = torch.as_tensor(weights, dtype=dtype, device=device).reshape(-1)
    if p.numel() != count:
        raise ValueError(f"{p.numel()} preference intensities for {count} references")
    if not torch.all(torch.isfinite(p)) or torch.any(p < 0):
        raise ValueError(f"preference intensities must be finite and >= 0, got {p.tolist()}")
    return p


_BLOCK_KEY = re.compile(r"^tf\.(\d+)\.")


def infer_config(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> PeCAConfig:
    """Read kind and sizes off the tensors of a published-layout adapter."""
    if "base_query" not in state_dict:
        raise PeCAFormatError(f"{source}: not a PeCA adapter (no 'base_query'; keys start with {sorted(state_dict)[:5]})")
    blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
    if not blocks:
        raise PeCAFormatError(f"{source}: not a PeCA adapter (no 'tf.<i>.' block keys)")
    query = state_dict["base_query"]
    if query.dim() != 3:
        raise PeCAFormatError(f"{source}: base_query must be [1, tokens, width], got {list(query.shape)}")
    width = query.shape[-1]
    ffn = state_dict.get("tf.0.ff.0.weight")
    if ffn is None:
        raise PeCAFormatError(f"{source}: missing key tf.0.ff.0.weight")
    if width % HEAD_WIDTH:
        raise PeCAFormatError(f"{source}: width {width} is not a multiple of the head width {HEAD_WIDTH}")
    if "pre_proj.weight" in state_dict:
        encoder_width = state_dict["pre_proj.weight"].shape[1]
        kind = "t5"
    else:
        encoder_width, kind = width, "clip"
    return PeCAConfig(kind, encoder_width, width, ffn.shape[0], max(blocks) + 1, query.shape[1])
