"""PeCA, the Personalized Conditioning Adapter (docs/method.md §2-3).

Module and parameter names match the published files (`weight/{L,H,bigG,T5}.safetensors`)
so loading is a strict `load_state_dict`. Guidance (equation 2) is computed one segment at
a time on fused scaled-dot-product attention:

    out = (1 - alpha) * Attn(q, K_target, V_target)
          + alpha * sum_i (p_i / sum_j p_j) * Attn(q, K_i, V_i)

(alpha: the paper's symbol for the degree, `degree` in code; p_i: the intensities), so the [heads, S, T * (1 + R)] score tensor is never built.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .adapter_names import PUBLISHED_SIZES, published_name
from .atomic import save_safetensors
from .defaults import DEGREE
from .intensities import check_intensities
from .threads import ThreadChooser, ThreadMemory

HEAD_WIDTH = 64
FORMAT_TAG = "drum-peca"  # the "format" metadata of files written by PeCA.save (the release's files carry none)
T5_ENCODE_RATIO = 4  # a T5 adapter works at E / 4 inside


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
    def name(self) -> str | None:
        """ "L", "H", "bigG" or "T5" for the published sizes, else None."""
        return published_name(self.kind, self.encoder_width)

    @classmethod
    def for_encoder(cls, kind: str, encoder_width: int, layers: int = 10, width: int | None = None) -> PeCAConfig:
        """The adapter the release builds for an encoder of `kind` ("clip"/"t5") and width E.

        CLIP: d = E, FFN d / 4, 78 queries; T5: d = E / 4 (`width` overrides it), FFN d, 256 queries.
        """
        if kind not in ("clip", "t5"):
            raise ValueError(f"unknown encoder kind {kind!r}; 'clip' or 't5'")
        width = width or (encoder_width // T5_ENCODE_RATIO if kind == "t5" else encoder_width)
        if width % HEAD_WIDTH or (kind == "clip" and width != encoder_width):
            raise ValueError(f"a {kind} adapter for width {encoder_width} would be {width} wide inside, not a multiple of {HEAD_WIDTH}")
        if kind == "t5":
            return cls("t5", encoder_width, width, width, layers, 256)
        return cls("clip", encoder_width, width, width // 4, layers, 78)

    @classmethod
    def published(cls, name: str) -> PeCAConfig:
        """The configuration of a published adapter ("L", "H", "bigG", "T5")."""
        return cls.for_encoder(*PUBLISHED_SIZES[name])


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


@dataclass
class ReferenceState:
    """Per-block keys and values of R references, reusable across targets and degrees.

    `keys[l]`, `values[l]`: [heads, R * T, d_head] for block l (references back to back).
    `shared_mixes`: the reference attention of blocks whose queries do not depend on the target
    (block 0 reads the constant empty-prompt query), kept with the query rows, intensity shares and kernel
    it was computed for and reused only while all three are equal (exact).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    count: int  # R
    tokens: int  # T, tokens per reference
    shared_mixes: dict[tuple[int, int], SharedMix] = field(default_factory=dict, repr=False)  # (block, query rows) -> its mix

    def to(self, device: torch.device | str) -> ReferenceState:
        """The same state on `device` (itself when already there), shared mixes included."""
        device = torch.device(device)
        if not self.keys or self.keys[0].device == device:
            return self
        mixes = {
            key: SharedMix(*(t.to(device) for t in (m.rows, m.intensity_shares, m.mixed)), m.kernel) for key, m in self.shared_mixes.items()
        }
        return ReferenceState([k.to(device) for k in self.keys], [v.to(device) for v in self.values], self.count, self.tokens, mixes)


@dataclass(frozen=True)
class SharedMix:
    """sum_i w_i Attn(rows, K_i, V_i) [heads, S, d_head] for query `rows` [heads, S, d_head] and intensity shares [R] (p_i / sum_j p_j)."""

    rows: torch.Tensor
    intensity_shares: torch.Tensor
    mixed: torch.Tensor
    kernel: str

    def matches(self, rows: torch.Tensor, intensity_shares: torch.Tensor, kernel: str) -> bool:
        same_kind = all(
            a.device == b.device and a.dtype == b.dtype and a.shape == b.shape
            for a, b in ((self.rows, rows), (self.intensity_shares, intensity_shares))
        )
        return same_kind and kernel == self.kernel and torch.equal(self.rows, rows) and torch.equal(self.intensity_shares, intensity_shares)


# Scores held at once by the blocked kernel (heads * B*S * references per block * T): 4 MiB in fp32, the
# size measured fastest (docs/performance.md, "Score block size").
BLOCK_SCORES = 1 << 20
# Scores of one chunk of references in the "sdpa" kernel ([chunk, heads, B*S, T]), as PyTorch's math
# backend would materialize them: 16 Mi (64 MiB in fp32). Bounds the working memory of a large
# reference set (T5: 4 MiB per reference per block) whatever backend SDPA picks.
SDPA_CHUNK_SCORES = 1 << 24


class GuidedCrossAttention(nn.Module):
    """Multi-head cross-attention with DrUM guidance (separate softmax per prompt).

    `kernel` picks how the reference segments are computed, both one softmax per prompt and
    neither building the [heads, S, T * (1 + R)] scores: "sdpa" (fused scaled-dot-product
    attention, a chunk of references as its batch), "blocked" (a block of references at a time
    with batched matmuls; faster on CPUs, see bench/), "auto" (sdpa on accelerators, blocked on CPU).
    """

    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.heads = width // HEAD_WIDTH
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.kernel = "auto"

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, d] -> [N, heads, T, d_head]."""
        n, t, _ = x.shape
        return x.view(n, t, self.heads, -1).transpose(1, 2)

    def reference_keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context [R, T, d] -> keys, values [heads, R * T, d_head], WITHOUT the key/value biases.

        Views into one [R*T, 2d] GEMM output. The key bias adds q . b_k to every score of a
        softmax, which cancels; the value bias is added once to the attention output (the
        attention weights over all references sum to one), see forward.
        """
        r, t, d = context.shape
        weight = torch.cat([self.key.weight, self.value.weight])  # one GEMM for both: [2d, d]
        keys, values = F.linear(context.reshape(1, r * t, d), weight).chunk(2, dim=-1)
        return self.split_heads(keys)[0], self.split_heads(values)[0]  # strided views, no copies

    def forward(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        references: ReferenceState | None,
        layer: int,
        target_share: torch.Tensor,
        reference_share: torch.Tensor,
        intensity_shares: torch.Tensor | None,
        guidance: bool = True,
        shared_query: bool = False,
    ) -> torch.Tensor:
        """x [B, S, d], target [B, T, d]; references hold block `layer`'s keys/values.

        target_share [B] = 1 - degree, reference_share [B] = degree, intensity_shares [R] =
        p_i / sum p: out = target_share * Attn(target) + reference_share * sum_i w_i Attn(ref_i).
        guidance=False: one softmax over [target | ref_1 | ... | ref_R] (the paper's ablation).
        shared_query: every row of x is the same constant query (block 0): its projection and its
        reference attention are computed once, the latter reused across calls (ReferenceState.shared_mixes).
        """
        b, s, d = x.shape
        q = self.split_heads(self.query(x[:1] if shared_query else x)).expand(b, -1, -1, -1)  # [B, heads, S, d_head]
        value_bias = self.value.bias.view(1, self.heads, 1, -1)
        if references is not None and not guidance:
            keys = torch.cat([self.split_heads(F.linear(target, self.key.weight)), _per_row(references.keys[layer], b)], 2)
            values = torch.cat([self.split_heads(F.linear(target, self.value.weight)), _per_row(references.values[layer], b)], 2)
            out = F.scaled_dot_product_attention(q, keys, values) + value_bias
            return self.proj(out.transpose(1, 2).reshape(b, s, d))
        dropout = self.dropout.p if self.training else 0.0  # on the attention probabilities, as the release
        out = F.scaled_dot_product_attention(q, self.split_heads(self.key(target)), self.split_heads(self.value(target)), dropout_p=dropout)
        if references is not None and intensity_shares is not None:
            rows_of = 1 if shared_query else b
            rows = q[:rows_of].transpose(0, 1).reshape(self.heads, rows_of * s, -1)  # [heads, B*S (or S), d_head]
            mixed = self._reference_mix(rows, references, layer, intensity_shares, reuse=shared_query and not self.training)
            mixed = mixed.view(self.heads, rows_of, s, -1).transpose(0, 1) + value_bias  # the intensity shares sum to one
            out = out * target_share.view(b, 1, 1, 1) + mixed * reference_share.view(b, 1, 1, 1)
        out = out.transpose(1, 2).reshape(b, s, d)
        return self.dropout(self.proj(out))

    def _reference_mix(self, rows, references: ReferenceState, layer: int, intensity_shares, reuse: bool) -> torch.Tensor:
        """sum_i w_i Attn(rows, K_i, V_i) [heads, L, d_head] for rows [heads, L, d_head]; `reuse`: from/into shared_mixes."""
        kernel = self.kernel if self.kernel != "auto" else ("blocked" if rows.device.type == "cpu" else "sdpa")
        reuse = reuse and not torch.is_grad_enabled()
        key = (layer, rows.shape[1])
        if reuse and key in references.shared_mixes and references.shared_mixes[key].matches(rows, intensity_shares, kernel):
            return references.shared_mixes[key].mixed
        attend = _references_sdpa if kernel == "sdpa" else _references_blocked
        mixed = attend(rows, references.keys[layer], references.values[layer], intensity_shares, references.tokens)
        if reuse:
            references.shared_mixes[key] = SharedMix(rows, intensity_shares, mixed, kernel)
        return mixed


def _per_row(states: torch.Tensor, batch: int) -> torch.Tensor:
    """Reference keys or values [heads, R*T, d_head] -> [B, heads, R*T, d_head] (a view)."""
    return states.unsqueeze(0).expand(batch, -1, -1, -1)


def _references_sdpa(rows, keys, values, intensity_shares, tokens: int) -> torch.Tensor:
    """sum_i w_i Attn(rows, K_i, V_i) on SDPA, a chunk of references as the batch. rows [h, L, c] -> [h, L, c].

    The query is repeated to the chunk's batch: PyTorch's fused kernels (flash, memory-efficient) need
    the same batch size in query and keys, and fall back to the math backend for a broadcast query.
    """
    h, length, c = rows.shape
    r = intensity_shares.shape[0]
    k = keys.view(h, r, tokens, c).transpose(0, 1)  # [R, h, T, c]
    v = values.view(h, r, tokens, c).transpose(0, 1)
    per_chunk = min(r, max(1, SDPA_CHUNK_SCORES // (h * length * tokens)))
    query = rows.unsqueeze(0).expand(per_chunk, -1, -1, -1).contiguous()  # [chunk, h, L, c]
    mixed = rows.new_zeros(h * length * c)
    for first in range(0, r, per_chunk):
        last = min(r, first + per_chunk)
        per_ref = F.scaled_dot_product_attention(query[: last - first], k[first:last], v[first:last])  # [n, h, L, c]
        mixed.addmv_(per_ref.reshape(last - first, -1).t(), intensity_shares[first:last])
    return mixed.view(h, length, c)


def _references_blocked(rows, keys, values, intensity_shares, tokens: int) -> torch.Tensor:
    """The same sum, a block of references at a time with batched matmuls (CPU)."""
    h, length, c = rows.shape
    r = intensity_shares.shape[0]
    blocks = -(-r // max(1, BLOCK_SCORES // (h * length * tokens)))
    per_block = -(-r // blocks)  # equal blocks
    rows = rows * (1.0 / math.sqrt(c))  # the score scale, on the small operand (exact for 64-wide heads)
    mixed = rows.new_zeros(h, length, c)
    for first in range(0, r, per_block):
        last = min(r, first + per_block)
        segment = slice(first * tokens, last * tokens)
        scores = torch.matmul(rows, keys[:, segment].transpose(1, 2))  # [h, L, n*T]
        probs = scores.view(h, length, last - first, tokens).softmax(-1).mul_(intensity_shares[first:last].view(1, 1, -1, 1))
        mixed.baddbmm_(probs.view(h, length, -1), values[:, segment])
    return mixed


class Block(nn.Module):
    """Post-LN cross-attention block: no self-attention, narrowing QuickGELU FFN."""

    def __init__(self, width: int, ffn_width: int, dropout: float = 0.0):
        super().__init__()
        self.attn = GuidedCrossAttention(width, dropout)
        self.norm1 = nn.LayerNorm(width, eps=1e-5)
        self.ff = nn.Sequential(nn.Linear(width, ffn_width), QuickGELU(), nn.Linear(ffn_width, width))
        self.norm2 = nn.LayerNorm(width, eps=1e-5)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, target, references, layer, target_share, reference_share, intensity_shares, guidance=True, shared_query=False):
        attended = self.attn(x, target, references, layer, target_share, reference_share, intensity_shares, guidance, shared_query)
        x = self.norm1(x + attended)
        return self.norm2(x + self.dropout(self.ff(x)))


class PeCA(nn.Module):
    """One adapter for one text encoder (CLIP-L, OpenCLIP-H/bigG, T5-XXL or custom sizes)."""

    def __init__(self, config: PeCAConfig, dropout: float = 0.0):
        super().__init__()
        self.config = config
        d = config.width
        # the published key: training stores its query here; inference takes the encoder's empty_query() instead
        self.base_query = nn.Parameter(torch.zeros(1, config.query_tokens, d))
        if config.kind == "t5":
            self.pre_proj = nn.Linear(config.encoder_width, d)
            self.post_proj = nn.Linear(d, config.encoder_width)
        self.tf = nn.ModuleList(Block(d, config.ffn_width, dropout) for _ in range(config.layers))
        self.source: str | None = None  # the file it was read from (from_file)
        self.thread_memory = ThreadMemory()  # this adapter's last CPU thread choice, where its next run starts (threads.py)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the adapter computes in (its parameters')."""
        return self.base_query.dtype

    @property
    def device(self) -> torch.device:
        """Where the adapter's parameters live."""
        return self.base_query.device

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> PeCA:
        """Build an adapter from tensors in the published layout; strict keys and shapes."""
        config = _checked_config({k: tuple(v.shape) for k, v in state_dict.items()}, source)
        model = cls(config)
        # fp32 math (float64 tensors stay float64, for oracle tests)
        dtype = torch.float64 if state_dict["base_query"].dtype == torch.float64 else torch.float32
        model.to(dtype).load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, strict=True)
        return model.eval()

    @classmethod
    def check_file(cls, path: str | os.PathLike) -> PeCAConfig:
        """The config of a `.safetensors` adapter file, checked as `from_file` checks it (format tag, keys,
        shapes) from the file's header alone: no tensor is read or computed. (ComfyUI validates a prompt
        on its server thread, where a torch operation would start a second OpenMP thread team.)"""
        path, shapes = _read_adapter_file(path, lambda file, key: tuple(file.get_slice(key).get_shape()))
        return _checked_config(shapes, path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> PeCA:
        """Load a `.safetensors` adapter file (never unpickles)."""
        path, tensors = _read_adapter_file(path, lambda file, key: file.get_tensor(key))
        model = cls.from_state_dict(tensors, source=path)
        model.source = path
        return model

    def save(self, path: str | os.PathLike) -> None:
        """Write the published layout (+ metadata), atomically."""
        tensors = {k: v.detach().float().cpu() for k, v in self.state_dict().items()}
        save_safetensors(tensors, path, {"format": FORMAT_TAG})

    # ------------------------------------------------------------------ inference
    def set_kernel(self, kernel: str) -> PeCA:
        """Reference attention kernel: "auto", "sdpa" or "blocked" (see GuidedCrossAttention)."""
        if kernel not in ("auto", "sdpa", "blocked"):
            raise ValueError(f"unknown attention kernel {kernel!r}")
        for block in self.tf:
            block.attn.kernel = kernel
        return self

    def _context(self, states: torch.Tensor) -> torch.Tensor:
        """Encoder states [N, T, E] -> block width [N, T, d]."""
        states = states.to(self.dtype)
        return self.pre_proj(states) if self.config.kind == "t5" else states

    def _check_states(self, name: str, states: torch.Tensor) -> None:
        if states.dim() != 3 or states.shape[-1] != self.config.encoder_width:
            raise ValueError(
                f"PeCA {self.config.name or self.config.kind}: {name} must be [N, T, {self.config.encoder_width}], got {list(states.shape)}"
            )

    @torch.no_grad()
    def encode_references(self, references: torch.Tensor) -> ReferenceState:
        """references [R, T, E] -> per-block keys/values, reused across targets and degrees."""
        self._check_states("references", references)
        context = self._context(references)
        pairs = []
        with ThreadChooser(context.device, self.thread_memory) as chooser:  # the thread count that is faster now (CPU contention)
            for block in self.tf:
                with chooser.step():
                    pairs.append(block.attn.reference_keys_values(context))
        keys, values = zip(*pairs)
        return ReferenceState(list(keys), list(values), references.shape[0], references.shape[1])

    def forward(
        self,
        query: torch.Tensor,
        target: torch.Tensor,
        references: torch.Tensor | ReferenceState | None = None,
        intensities: torch.Tensor | Sequence[float] | None = None,
        degree: float | Sequence[float] | torch.Tensor = DEGREE,
        guidance: bool = True,
        pooled_only: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Fuse a target condition with reference conditions.

        query [1, S, E] (empty-prompt states), target [B, T, E], references [R, T, E] or a
        ReferenceState, intensities [R] preference intensities p_i (default all 1), degree (the paper's alpha) a float
        or one value per batch row. Returns CLIP (tokens [B, 77, E], pooled [B, E]) raw,
        or T5 (tokens [B, 256, E], None). guidance=False is the paper's "no guidance"
        ablation: one softmax over [target | refs] in every block, alpha and p unused.
        pooled_only (CLIP): only the pooled query row runs, returns (None, pooled [B, E]); the same
        numbers, since query rows never mix (cross-attention only, row-wise feed-forward and norms).
        """
        self._check_states("query", query)
        self._check_states("target", target)
        if pooled_only:
            if self.config.kind != "clip":
                raise ValueError("pooled_only: a T5 adapter has no pooled output")
            query = query[:, -1:]
        b = target.shape[0]
        dtype = self.dtype
        if isinstance(references, torch.Tensor):
            references = self.encode_references(references) if references.shape[0] else None
        if references is not None and references.count == 0:
            references = None
        degrees = _degrees(degree, b, dtype, target.device)
        intensity_shares = None
        if references is not None:
            p = check_intensities(intensities, references.count, "PeCA intensities", dtype, target.device)
            if p.sum() > 0:  # all p_i = 0 behaves like alpha = 0
                intensity_shares = p / p.sum()
        target_share = 1.0 - degrees if intensity_shares is not None else torch.ones_like(degrees)
        x = self._context(query).expand(b, -1, -1)
        context = self._context(target)
        # block 0 may reuse its reference mix: block 1 is the probe
        with ThreadChooser(x.device, self.thread_memory, probe_step=1) as chooser:
            for i, block in enumerate(self.tf):
                with chooser.step():
                    x = block(x, context, references, i, target_share, degrees, intensity_shares, guidance, shared_query=i == 0)
        if self.config.kind == "t5":
            return self.post_proj(x), None
        return (None, x[:, -1]) if pooled_only else (x[:, :-1], x[:, -1])


def _degrees(degree, batch: int, dtype, device) -> torch.Tensor:
    """degree (float or [B]) -> [B], checked to lie in [0, 1]."""
    degrees = torch.as_tensor(degree, dtype=dtype, device=device).reshape(-1)
    if degrees.numel() == 1:
        degrees = degrees.expand(batch)
    if degrees.numel() != batch:
        raise ValueError(f"degree has {degrees.numel()} values for a batch of {batch} targets")
    if not torch.all((degrees >= 0) & (degrees <= 1)):
        raise ValueError(f"degree must lie in [0, 1], got {degrees.tolist()}")
    return degrees


_BLOCK_KEY = re.compile(r"^tf\.(\d+)\.")
T = TypeVar("T")


def _read_adapter_file(path: str | os.PathLike, read: Callable[[Any, str], T]) -> tuple[str, dict[str, T]]:
    """(path, {key: read(file, key)} for every tensor) of a `.safetensors` adapter file opened with
    safetensors' `safe_open` (`read` takes a header entry or a tensor); refuses other extensions and files
    whose metadata names another format (never unpickles)."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PeCA adapter file not found: {path}")
    if not path.endswith(".safetensors"):
        raise PeCAFormatError(f"{path}: adapters are read from .safetensors files only")
    try:
        with safe_open(path, "pt") as file:
            claimed = (file.metadata() or {}).get("format")
            entries = {key: read(file, key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise PeCAFormatError(f"{path}: unreadable safetensors file ({error})") from error
    if claimed is not None and claimed != FORMAT_TAG:
        raise PeCAFormatError(f"{path}: a {claimed!r} file, not a PeCA adapter (format {FORMAT_TAG!r} or the release's layout)")
    return path, entries


def _checked_config(shapes: Mapping[str, tuple[int, ...]], source: str) -> PeCAConfig:
    """The config of the published-layout tensor shapes `shapes`; PeCAFormatError naming `source` and every
    missing, unexpected or mis-shaped key. The expected shapes come from a meta-device model (no memory, no compute)."""
    config = infer_config(shapes, source)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in PeCA(config).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    misshaped = [f"{k} {shapes[k]} (expected {expected[k]})" for k in expected if k in shapes and shapes[k] != expected[k]]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", misshaped)):
        if keys:
            problems.append(f"{label}: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}")
    if problems:
        raise PeCAFormatError(f"{source}: not a complete PeCA ({config.kind}, {config.layers} blocks): " + "; ".join(problems))
    return config


def infer_config(shapes: Mapping[str, tuple[int, ...]], source: str = "state dict") -> PeCAConfig:
    """Read kind and sizes off the tensor shapes of a published-layout adapter."""
    if "base_query" not in shapes:
        raise PeCAFormatError(f"{source}: not a PeCA adapter (no 'base_query'; keys start with {sorted(shapes)[:5]})")
    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK_KEY.match(k))}
    if not blocks:
        raise PeCAFormatError(f"{source}: not a PeCA adapter (no 'tf.<i>.' block keys)")
    query = shapes["base_query"]
    if len(query) != 3:
        raise PeCAFormatError(f"{source}: base_query must be [1, tokens, width], got {list(query)}")
    width = query[-1]
    ffn = shapes.get("tf.0.ff.0.weight")
    if ffn is None:
        raise PeCAFormatError(f"{source}: missing key tf.0.ff.0.weight")
    if width % HEAD_WIDTH:
        raise PeCAFormatError(f"{source}: width {width} is not a multiple of the head width {HEAD_WIDTH}")
    if "pre_proj.weight" in shapes:
        encoder_width = shapes["pre_proj.weight"][1]
        kind = "t5"
    else:
        encoder_width, kind = width, "clip"
    return PeCAConfig(kind, encoder_width, width, ffn[0], max(blocks) + 1, query[1])
