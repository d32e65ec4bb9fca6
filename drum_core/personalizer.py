"""How each model family is fed (docs/method.md §5), for any host of the text encoders.

    family  prompt embeddings                                         pooled
    sd1     LN_L(A_L(ctx@-1).tokens)                                  LN_L(A_L(@-1).pooled)
    sd2     LN_H(A_H(ctx@-1).tokens)    (-1 = layer 23 of ViT-H)      P_H(LN_H(A_H(@-1).pooled))
    sdxl    cat(A_L(@-2).tokens, A_G(@-2).tokens), no LN              P_G(LN_G(A_G(@-1).pooled))
    sd3     cat(A_L(@-2), A_G(@-2)) padded to 4096, then A_T5 tokens  cat(P_L(LN_L(..)), P_G(LN_G(..)))
    flux    A_T5 tokens                                               LN_L(A_L(@-1).pooled)
    pixart  A_T5 tokens cut to the prompt's own length (Chroma too)   none
    ltxv    A_T5 tokens cut to max(128, prompt length) + mask         none
    mochi   A_T5 tokens cut to max(256, prompt length) + mask         none
    hidream A_T5 tokens cut to 128 (Llama stream untouched)           cat(P_L(LN_L(..)), P_G(LN_G(..)))

`P` is the projection the host applies (TextEncoderBackend.project). A family is a DECLARED
set of encoders (`FamilySpec.streams`): the family is the one whose set is exactly the host's,
never a model name, and any other set is refused (`UnsupportedFamilyError`). Encoders that take
the same set apart (the T5-only families) are told apart by their T5 token-length and
attention-mask conventions (`T5Conventions`). Encoder names are ComfyUI's tokenizer keys.

The T5 adapter reads 256 tokens (the prompt's tokens, padded or cut with EOS kept, computed
as the host computes them: with its attention mask where the family uses one); its output is
cut to the family's own token count for the prompt (`t5_length`), capped at 256.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .adapter_names import ENCODER_ADAPTERS
from .backend import T5_TOKENS, Encoding, TextEncoderBackend
from .cache import EmbeddingCache
from .defaults import DEGREE
from .intensities import check_intensities
from .peca import PeCA, ReferenceState

SD3_CLIP_WIDTHS = {"l": 768, "g": 1280}  # what ComfyUI zero-fills for an absent SD3 CLIP
SD3_WIDTH = 4096  # width of the SD3 condition when it has no T5 to take it from


class AdapterMismatchError(ValueError):
    """An adapter that is missing, or made for another encoder."""


class UnsupportedFamilyError(ValueError):
    """A set of text encoders that is no supported family's (refused before anything is computed)."""


@dataclass(frozen=True)
class T5Conventions:
    """How a family's host tokenizes and runs T5: tokens per prompt max(min_tokens, prompt + EOS), cut at
    max_tokens (None: never), and whether padding is masked out of the attention (then the conditioning
    carries the mask where `mask_in_conditioning`)."""

    min_tokens: int
    max_tokens: int | None = None
    attention_mask: bool = False
    mask_in_conditioning: bool = False


@dataclass(frozen=True)
class FamilySpec:
    label: str  # the family as users name it
    encoders: tuple[str, ...]  # the encoders DrUM personalizes, each with its adapter
    token_encoders: tuple[str, ...]  # CLIP encoders whose tokens are concatenated on the last dim
    normalize_tokens: bool  # apply the final LayerNorm to the token states
    token_layer: int  # default context layer of the token states
    pooled_encoders: tuple[str, ...]  # concatenated pooled vectors
    t5: T5Conventions | None = None  # the T5 conventions (families with a T5 encoder)
    passthrough: tuple[str, ...] = ()  # host encoders the family has that DrUM passes through untouched
    partial: bool = False  # the host may leave some of `encoders` out (SD3: ComfyUI zero-fills them)

    @property
    def streams(self) -> frozenset[str]:
        """Every encoder of the family: what a host must have, exactly."""
        return frozenset(self.encoders) | frozenset(self.passthrough)


ADAPTER_T5 = T5Conventions(T5_TOKENS)  # FLUX and SD3: T5 at the adapter's 256 tokens, unmasked
FAMILIES = {
    "sd1": FamilySpec("SD1.x", ("l",), ("l",), True, -1, ("l",)),
    "sd2": FamilySpec("SD2.x", ("h",), ("h",), True, -1, ("h",)),
    "sdxl": FamilySpec("SDXL", ("l", "g"), ("l", "g"), False, -2, ("g",)),
    "sd3": FamilySpec("SD3", ("l", "g", "t5"), ("l", "g"), False, -2, ("l", "g"), ADAPTER_T5, partial=True),
    "flux": FamilySpec("FLUX.1", ("l", "t5"), (), False, -1, ("l",), ADAPTER_T5),
    "pixart": FamilySpec("PixArt-α/Σ, Chroma", ("t5",), (), False, -1, (), T5Conventions(1)),
    "ltxv": FamilySpec("LTX-Video", ("t5",), (), False, -1, (), T5Conventions(128, None, True, True)),
    "mochi": FamilySpec("Mochi", ("t5",), (), False, -1, (), T5Conventions(256, None, True, True)),
    "hidream": FamilySpec("HiDream", ("l", "g", "t5"), (), False, -1, ("l", "g"), T5Conventions(128, 128, True), ("llama",)),
}


def supported_families() -> str:
    """The supported families and their encoder sets, for error messages."""
    return "; ".join(f"{spec.label}: {'+'.join(sorted(spec.streams))}" for spec in FAMILIES.values())


def detect_family(encoder_names: Iterable[str], stack: Iterable[str] | None = None, t5: T5Conventions | None = None) -> str:
    """The family whose declared encoder set is exactly `encoder_names` ("l", "h", "g", "t5", and passed-through
    ones such as "llama"); UnsupportedFamilyError for any other set.

    `stack`: every encoder slot the host's model has, present or not (ComfyUI's SD3 stack keeps absent encoders as
    None): a partial family (SD3) matches any non-empty part of its set there. `t5`: the host's T5 conventions, which
    tell apart the families with the same set (PixArt/Chroma, LTX-Video and Mochi are T5 alone).
    """
    names = frozenset(encoder_names)
    slots = names if stack is None else frozenset(stack) | names
    found = [family for family, spec in FAMILIES.items() if spec.streams == slots == names]
    if not found:
        found = [family for family, spec in FAMILIES.items() if spec.partial and spec.streams == slots and names & set(spec.encoders)]
        if not found and stack is None:  # SD3 without some encoder, from a host that keeps no slots (two encoders at least)
            found = [family for family, spec in FAMILIES.items() if spec.partial and len(names) > 1 and names < spec.streams]
    if len(found) > 1 and t5 is not None:
        found = [family for family in found if FAMILIES[family].t5 == t5]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UnsupportedFamilyError(
            f"the text encoders {sorted(names)} are those of {', '.join(FAMILIES[f].label for f in found)}, which differ only in "
            "their T5 conventions: the host must give them"
        )
    raise UnsupportedFamilyError(f"no supported model family uses the text encoders {sorted(names)} (supported: {supported_families()})")


def t5_length(family: str, prompt_tokens: int | None, padding: int = 0) -> int:
    """T5 tokens of `family`'s condition for a prompt of `prompt_tokens` tokens (EOS included) followed by `padding`
    pad tokens (the host's min_padding, e.g. ComfyUI's T5TokenizerOptions): the family's own count, capped at the
    adapter's 256. FLUX and SD3 (min 256) need no count."""
    conventions = FAMILIES[family].t5
    if conventions is None or conventions.min_tokens >= T5_TOKENS:
        return T5_TOKENS
    if prompt_tokens is None:
        raise ValueError(f"{FAMILIES[family].label}: the T5 length of the prompt is needed (its host encoder has no token_count)")
    length = prompt_tokens if conventions.max_tokens is None else min(prompt_tokens, conventions.max_tokens)
    return min(max(conventions.min_tokens, length + padding), T5_TOKENS)  # padding may pass the host's maximum


@dataclass
class Condition:
    """tokens [B, L, D] and pooled [B, P] (None where the family has none), float32; `attention_mask` [B, L] (int64,
    1 = prompt token) where the family's conditioning carries its T5 attention mask (LTX-Video, Mochi), else None;
    `chosen` [m] (int64, ascending): the history rows that took part where `relevant` kept only some, else None (all)."""

    tokens: torch.Tensor
    pooled: torch.Tensor | None
    attention_mask: torch.Tensor | None = None
    chosen: torch.Tensor | None = None


@dataclass
class _Run:
    tokens: torch.Tensor | None  # [B, C * T, E] adapter (or plain) token states, raw; None where unused
    pooled: torch.Tensor | None  # [B, E] raw pooled token of the adapter; plain runs: the encoder's final pooled [B, P]


class Personalizer:
    """Personalized conditions for one model: its encoders, their adapters, one history."""

    def __init__(
        self,
        family: str,
        encoders: Mapping[str, TextEncoderBackend],
        adapters: Mapping[str, PeCA],
        cache: EmbeddingCache | None = None,
        token_layer: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; one of {sorted(FAMILIES)}")
        self.family = family
        self.spec = FAMILIES[family]
        self.encoders = {name: enc for name, enc in encoders.items() if enc is not None}
        given, declared = set(self.encoders), set(self.spec.encoders)
        if not (given == declared or (self.spec.partial and given and given < declared)):
            raise UnsupportedFamilyError(
                f"{self.spec.label} is personalized through the encoders {sorted(declared)}"
                f"{' (or some of them)' if self.spec.partial else ''}, got {sorted(given)}"
            )
        self.adapters = dict(adapters)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.token_layer = token_layer if token_layer is not None else self.spec.token_layer
        self.progress = progress
        self.references: list[str] = []
        self.intensities: torch.Tensor | None = None
        self._reference_states: dict[tuple[str, int], ReferenceState] = {}
        self._features: torch.Tensor | None = None  # [R, P] pooled features of the references (first CLIP encoder)
        self._queries: dict[str, torch.Tensor] = {}
        for name, encoder in self.encoders.items():
            check_adapter(name, encoder, self.adapters.get(name))

    def rebind(self, encoders: Mapping[str, TextEncoderBackend]) -> None:
        """Use equivalent encoders (same names and fingerprints), e.g. from a newer host object,
        keeping the encoded history; anything else raises ValueError."""
        given = {name: enc for name, enc in encoders.items() if enc is not None}
        if {n: e.fingerprint for n, e in given.items()} != {n: e.fingerprint for n, e in self.encoders.items()}:
            raise ValueError("rebind needs the same encoders (names and fingerprints) as the Personalizer was built with")
        self.encoders = given

    def place_references(self, device_of: Callable[[str], torch.device | str]) -> None:
        """Move the encoded history's per-block keys/values of each encoder (by name) to `device_of(name)`
        (e.g. the adapters' device for a run, the offload device between runs)."""
        for (name, layer), state in self._reference_states.items():
            self._reference_states[(name, layer)] = state.to(device_of(name))

    # ------------------------------------------------------------------ layers per encoder
    def _reads_tokens(self, name: str) -> bool:
        """Whether the family reads encoder `name`'s token states (else only its pooled vector)."""
        return name in self.spec.token_encoders or self.encoders[name].kind == "t5"

    def _layers(self, name: str) -> list[int]:
        """Context layers this family reads from encoder `name` (tokens first)."""
        return encoder_layers(self.family, name, self.encoders[name].kind, self.token_layer)

    # ------------------------------------------------------------------ history
    def set_history(
        self, prompts: Sequence[str], intensities: Sequence[float] | torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> None:
        """Encode the reference prompts (cached) and their per-block keys/values.

        `features` [R, P]: the prompts' pooled features from the first CLIP encoder (a coreset
        profile's), used by `condition(..., relevant=m)`; by default they come from the cache.
        """
        self.references = list(prompts)
        self._features = features
        self.intensities = None if intensities is None else check_intensities(intensities, len(self.references), "history")
        self._reference_states = {}
        if not self.references:
            return
        first = first_clip(self.encoders) if any(e.kind == "clip" for e in self.encoders.values()) else None
        total = len(self.encoders) * len(self.references)
        for j, name in enumerate(self.encoders):  # one encoder pass per prompt gives every layer (+ the relevance features)
            offset = j * len(self.references)
            report = (lambda done, _n, offset=offset: self.progress(offset + done, total)) if self.progress else None
            layers = self._layers(name)
            wants_features = name == first and self._features is None
            encoding = self.cache.encode(self.encoders[name], self.references, layers, features=wants_features, progress=report)
            if wants_features:
                self._features = encoding.features
            adapter = self.adapters[name]
            for layer in layers:
                self._reference_states[(name, layer)] = adapter.encode_references(encoding.states[layer].to(adapter.device))

    # ------------------------------------------------------------------ conditions
    def condition(self, target: str, degree: float | Sequence[float] = DEGREE, relevant: int = 0) -> Condition:
        """The personalized condition of `target`; one row per degree. Empty history: plain output.

        `relevant` m > 0: only the m references most similar to `target` take part (see
        `_most_relevant_to`), exactly as if the history held just those; `Condition.chosen` names them.
        """
        if not self.references:
            return self.plain_condition(target, batch=len(degree) if isinstance(degree, (list, tuple)) else 1)
        degrees = list(degree) if isinstance(degree, (list, tuple)) else [degree]
        if relevant < 0:
            raise ValueError(f"relevant must be >= 0 (0 = every reference), got {relevant}")
        ranked = first_clip(self.encoders) if 0 < relevant < len(self.references) else None
        encodings = {name: self._encode_target(name, target, eos=name == ranked) for name in self.encoders}  # one pass each
        chosen = None
        if ranked is not None:
            encoder = self.encoders[ranked]
            chosen = self._most_relevant_to(encoder.project(encoder.final_norm(encodings[ranked].eos[:1]))[0], relevant)
        runs = {name: self._personalize(name, encodings[name], degrees, chosen) for name in self.encoders}
        condition = self._assemble(runs, len(degrees), target)
        condition.chosen = chosen
        return condition

    def _most_relevant_to(self, query: torch.Tensor, count: int) -> torch.Tensor:
        """Indices [count] (ascending) of the references whose pooled features are most similar (cosine) to the
        target's pooled features `query` [P]; ties go to the lower history index.

        Features of the first CLIP encoder, as coreset sampling uses; the references' come from
        `set_history(features=...)` or its encoder pass (cached), never from a new encode.
        """
        if self._features is None:
            self._features = self.cache.pooled_features(self.encoders[first_clip(self.encoders)], self.references)
        return most_similar(query, self._features, count)

    def plain_condition(self, target: str, batch: int = 1) -> Condition:
        """The plain encoder output (no adapter), as the host's own text encode gives it."""
        runs = {}
        for name, encoder in self.encoders.items():
            uses_tokens = self._reads_tokens(name)  # pooled-only encoders need no token states
            layers = self._layers(name)[:1] if uses_tokens else []
            encoding = self._encode_target(name, target, eos=name in self.spec.pooled_encoders, layers=layers)
            tokens = encoding.states[layers[0]].reshape(1, -1, encoder.width).expand(batch, -1, -1) if uses_tokens else None
            pooled = None if encoding.eos is None else encoder.project(encoder.final_norm(encoding.eos[:1])).expand(batch, -1)
            runs[name] = _Run(tokens, pooled)
        return self._assemble(runs, batch, target, plain=True)

    def _encode_target(self, name: str, target: str, eos: bool = False, layers: Sequence[int] | None = None) -> Encoding:
        """One encoder pass over `target` for all `layers` (default: the family's): states [C, T, E] float32, one row per
        77-token chunk where the host splits long prompts (else C = 1); `eos`: raw EOS states [C, E] (ComfyUI pools the first)."""
        encoder = self.encoders[name]
        layers = self._layers(name) if layers is None else layers
        chunked = getattr(encoder, "prompt_chunks", None)
        if chunked is not None and encoder.kind == "clip":
            return chunked(target, layers, eos)
        return encoder.encode([target], layers, eos)

    def _query(self, name: str) -> torch.Tensor:
        if name not in self._queries:
            self._queries[name] = self.encoders[name].empty_query().float()
        return self._queries[name]

    def _personalize(self, name: str, target: Encoding, degrees: list[float], chosen: torch.Tensor | None = None) -> _Run:
        """The adapter's run for encoder `name` on the target's encoding; `chosen`: indices of the references taking part (default all)."""
        adapter = self.adapters[name]
        intensities = self.intensities if chosen is None or self.intensities is None else self.intensities[chosen]
        device = adapter.device
        batch = len(degrees)
        runs = []
        layers = self._layers(name)
        for layer in layers:
            pooled_only = not (self._reads_tokens(name) and layer == layers[0])  # only the pooled query row runs (the same numbers)
            chunks = target.states[layer][:1] if pooled_only else target.states[layer]  # a pooled run needs the first chunk
            c = chunks.shape[0]
            targets = chunks.float().to(device).repeat(batch, 1, 1)  # [B * C, T, E], chunks inner
            row_degrees = [a for a in degrees for _ in range(c)]
            references = self._reference_states[(name, layer)]
            if chosen is not None:
                references = select_references(references, chosen)
            with torch.inference_mode():
                tokens, pooled = adapter(
                    self._query(name).to(device), targets, references, intensities, row_degrees, pooled_only=pooled_only
                )
            tokens = None if tokens is None else tokens.reshape(batch, c * tokens.shape[1], tokens.shape[2])
            runs.append(_Run(tokens, pooled.reshape(batch, c, -1)[:, 0] if pooled is not None else None))
        return _Run(runs[0].tokens, runs[-1].pooled)

    def _t5_length(self, target: str) -> int:
        """The T5 tokens of the family's condition for `target` (`t5_length`; the host counts the prompt's tokens)."""
        conventions = self.spec.t5
        if conventions is None or conventions.min_tokens >= T5_TOKENS:
            return T5_TOKENS
        count = getattr(self.encoders["t5"], "token_count", None)
        padding = getattr(self.encoders["t5"], "min_padding", None)
        return t5_length(self.family, None if count is None else count(target), 0 if padding is None else padding(target))

    def _assemble(self, runs: Mapping[str, _Run], batch: int, target: str, plain: bool = False) -> Condition:
        """The family's condition of `target` from each encoder's run; `plain`: the runs hold final pooled vectors (no adapter)."""
        spec = self.spec
        clip_parts = []
        for name in spec.token_encoders:
            if name in runs:
                tokens = runs[name].tokens
                if spec.normalize_tokens:
                    tokens = self.encoders[name].final_norm(tokens)
                clip_parts.append(tokens.float())
            elif self.family == "sd3":
                clip_parts.append(None)
        pooled_parts = []
        for name in spec.pooled_encoders:
            if name not in runs:
                pooled_parts.append(torch.zeros(batch, SD3_CLIP_WIDTHS[name]) if self.family == "sd3" else None)
            elif plain:
                pooled_parts.append(runs[name].pooled.float())
            else:
                encoder = self.encoders[name]
                pooled_parts.append(encoder.project(encoder.final_norm(runs[name].pooled)).float())
        pooled = torch.cat([p.cpu() for p in pooled_parts], -1) if pooled_parts and None not in pooled_parts else None
        t5 = runs["t5"].tokens.float().cpu() if "t5" in runs else None
        mask = None
        if t5 is not None and spec.t5 is not None:
            length = self._t5_length(target)
            t5 = t5[:, :length]
            if spec.t5.mask_in_conditioning:
                count = self.encoders["t5"].token_count(target)
                mask = (torch.arange(length) < count).long().expand(batch, -1).clone()
        if self.family == "sd3":
            tokens = _sd3_tokens(clip_parts, t5, batch)
        elif spec.token_encoders:
            tokens = torch.cat([p.cpu() for p in clip_parts], -1)
        else:
            if t5 is None:
                raise AdapterMismatchError(f"{spec.label} needs its T5 text encoder")
            tokens = t5
        return Condition(tokens, pooled, mask)


def encoder_layers(family: str, name: str, kind: str, token_layer: int | None = None) -> list[int]:
    """Context layers `family` reads from its encoder `name` of `kind` ("clip"/"t5"), tokens first;
    `token_layer` overrides the family's token layer (CLIP Set Last Layer)."""
    if kind == "t5":
        return [-1]
    spec = FAMILIES[family]
    layers = [spec.token_layer if token_layer is None else token_layer] if name in spec.token_encoders else []
    if name in spec.pooled_encoders and -1 not in layers:
        layers.append(-1)
    return layers


def first_clip(encoders: Iterable[str]) -> str:
    """The encoder whose pooled features drive the coreset and relevance: l, else h (SD2), else g."""
    names = set(encoders)
    for name in ("l", "h", "g"):
        if name in names:
            return name
    raise ValueError(
        "coreset sampling and 'relevant' need a CLIP text encoder (its pooled features rank the prompts); this model has only T5"
    )


def most_similar(query: torch.Tensor, features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices [min(count, R)], ascending, of the rows of `features` [R, P] with the highest cosine to `query` [P].

    Computed in float64; equal similarities go to the lower row index.
    """
    similarity = torch.nn.functional.cosine_similarity(features.double(), query.double().reshape(1, -1).to(features.device), dim=1)
    order = torch.sort(similarity, descending=True, stable=True).indices[:count]
    return order.sort().values.cpu()


def select_references(state: ReferenceState, indices: torch.Tensor) -> ReferenceState:
    """The keys/values of references `indices` only ([heads, m * T, d_head] per block), sliced from `state`, not recomputed."""
    index = indices.to(state.keys[0].device)

    def pick(per_block: torch.Tensor) -> torch.Tensor:
        heads, _, width = per_block.shape
        return per_block.view(heads, state.count, state.tokens, width).index_select(1, index).reshape(heads, -1, width)

    return ReferenceState([pick(k) for k in state.keys], [pick(v) for v in state.values], len(indices), state.tokens)


def _sd3_tokens(clip_parts: list[torch.Tensor | None], t5: torch.Tensor | None, batch: int) -> torch.Tensor:
    """cat(l, g) zero-padded to the T5 width (4096), then the T5 tokens along the sequence."""
    present = [p for p in clip_parts if p is not None]
    pieces = []
    if present:
        length = present[0].shape[1]
        filled = [p.cpu() if p is not None else torch.zeros(batch, length, w) for p, w in zip(clip_parts, SD3_CLIP_WIDTHS.values())]
        clip = torch.cat(filled, -1)
        width = t5.shape[-1] if t5 is not None else SD3_WIDTH
        pieces.append(torch.nn.functional.pad(clip, (0, width - clip.shape[-1])))
    if t5 is not None:
        pieces.append(t5)
    if not pieces:
        raise AdapterMismatchError("SD3 needs at least one text encoder")
    return torch.cat(pieces, 1)


def check_adapter(name: str, encoder: TextEncoderBackend, adapter: PeCA | None) -> None:
    """Raise AdapterMismatchError unless `adapter` was made for `encoder`."""
    expected = ENCODER_ADAPTERS.get(name, name)
    if adapter is None:
        raise AdapterMismatchError(f"no PeCA adapter for text encoder '{name}' (expected the {expected} adapter, {expected}.safetensors)")
    config = adapter.config
    source = getattr(adapter, "source", f"the {config.name or config.kind} adapter")
    if config.kind != encoder.kind or config.encoder_width != encoder.width:
        raise AdapterMismatchError(
            f"{source} is a {config.kind} adapter for width {config.encoder_width} ({config.name or 'custom'}), "
            f"but text encoder '{name}' is {encoder.kind} of width {encoder.width}: use the {expected} adapter"
        )
