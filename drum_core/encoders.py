"""Standalone text encoders (transformers CLIP / CLIPWithProjection / T5) as TextEncoderBackends.

    HFClipBackend  CLIPTextModel[WithProjection] + CLIPTokenizer
        encode(p, layers)        out.hidden_states[layer] for each layer, one forward pass
        hidden_states(p, layer)  out.hidden_states[layer]       raw, before final_layer_norm
        pooled token             raw state at the EOS position  (transformers' own rule)
        final_norm               final_layer_norm
        project                  text_projection (WithProjection) or identity
    HFT5Backend    T5EncoderModel + T5 tokenizer
        hidden_states(p)         last_hidden_state, 256 tokens  (final RMSNorm applied)
    OpenClipBackend  open_clip CLIP / CustomTextCLIP text tower + open_clip tokenizer
        encode(p, layers)        the blocks run once, up to the deepest layer asked for
        hidden_states(p, layer)  residual stream after block `layer`, before ln_final
        pooled token             raw state at open_clip's pool position (text_pool_type)
        final_norm               ln_final
        project                  text_projection (Parameter [E, P] or Linear) or identity

Every prompt is cut/padded to exactly 77 (CLIP) or 256 (T5) tokens with the tokenizer's own
pad token, no attention mask (as diffusers feeds SD/SDXL/SD3/FLUX). transformers, open_clip and
their models are imported by the caller; nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from .backend import CLIP_TOKENS, T5_TOKENS, Encoding
from .fingerprint import module_fingerprint, weights_fingerprint

LEGACY_EOS_ID = 2  # configs made before transformers PR #24773: pool at argmax(input ids)


def text_tower_tensors(tower: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter and buffer an open_clip text tower reads (token and positional embeddings,
    every block, final norm, projection, attention mask), not those of an image tower held by the same model."""
    named = []
    for part in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "attn_mask"):
        value = getattr(tower, part, None)
        if isinstance(value, nn.Module):
            named += [(f"{part}.{key}", tensor) for key, tensor in value.state_dict(keep_vars=True).items()]
        elif isinstance(value, torch.Tensor):
            named.append((part, value))
    return named


def _config_digest(model: nn.Module) -> str:
    config = model.config.to_dict()
    text = json.dumps(
        {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _apply(module: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """Run `module` in its own dtype/device; float32 result on the device of `states`."""
    parameter = next(module.parameters())
    with torch.inference_mode():
        return module(states.to(device=parameter.device, dtype=parameter.dtype)).float().to(states.device)


class _ClipStates:
    """What every CLIP-like backend derives from its `token_ids`, `eos_positions` and `_states`."""

    def encode(self, prompts: Sequence[str], layers: Sequence[int] = (-1,), eos: bool = False) -> Encoding:
        """One forward pass: raw states [N, 77, E] of each of `layers` and, if `eos`, the raw last-layer EOS states [N, E]."""
        ids = self.token_ids(prompts)
        states = self._states(ids, sorted(set(layers) | ({-1} if eos else set())))
        at_eos = None
        if eos:
            top = states[-1]
            at_eos = top[torch.arange(top.shape[0]), self.eos_positions(ids).to(top.device)]
        return Encoding({layer: states[layer] for layer in layers}, at_eos)

    def hidden_states(self, prompts: Sequence[str], layer: int = -1) -> torch.Tensor:
        """Raw states [N, 77, E] of `layer` (-1 = last), before the final LayerNorm."""
        return self.encode(prompts, (layer,)).states[layer]

    def raw_pooled(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, E] raw last-layer states at the pooling (EOS) positions, before the final LayerNorm."""
        return self.encode(prompts, (), eos=True).eos

    def empty_query(self) -> torch.Tensor:
        """[1, 78, E]: raw last-layer states of "" and, as the 78th token, its raw EOS state."""
        encoding = self.encode([""], (-1,), eos=True)
        return torch.cat([encoding.states[-1], encoding.eos.unsqueeze(1)], 1)

    def _check_layers(self, layers: Sequence[int]) -> None:
        for layer in layers:
            if not -self.layers <= layer <= -1:
                raise ValueError(f"CLIP layer {layer} out of range: this encoder has {self.layers} layers (use -1 .. -{self.layers})")

    def pooled_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, P] = project(final_norm(raw EOS state)): the host's pooled output (pooler_output / text_embeds)."""
        return self.project(self.final_norm(self.raw_pooled(prompts)))


class HFClipBackend(_ClipStates):
    """A transformers CLIP text model (with or without projection) seen as PeCA needs it.

    `project_pooled` says whether the host uses projected pooled vectors: None follows the
    model (projected iff it has `text_projection`); False forces the raw pooler output.
    """

    kind: Literal["clip"] = "clip"
    tokens_per_prompt = CLIP_TOKENS

    def __init__(self, model: nn.Module, tokenizer, project_pooled: bool | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.width = int(model.config.hidden_size)
        self.layers = int(model.config.num_hidden_layers)
        text_model = getattr(model, "text_model", model)  # transformers 4: CLIPTextModel.text_model
        self.final_layer_norm = text_model.final_layer_norm
        projection = getattr(model, "text_projection", None)
        if project_pooled and projection is None:
            raise ValueError(f"{type(model).__name__} has no text_projection, so its pooled vectors cannot be projected")
        self.projection = projection if project_pooled is not False else None
        self.eos_token_id = model.config.eos_token_id
        if tokenizer.pad_token_id is None:
            raise ValueError(f"CLIP tokenizer {type(tokenizer).__name__} has no pad token; it cannot pad prompts to 77 tokens")
        self.fingerprint = (  # every parameter and buffer counts (drum_core.fingerprint), once per backend
            f"hf-clip:{type(model).__name__}:cfg={_config_digest(model)}:w={module_fingerprint(model)}"
            f":pad={tokenizer.pad_token_id}:vocab={len(tokenizer)}:projected={self.projection is not None}:raw-pre-ln"
        )

    @property
    def device(self) -> torch.device:
        return self.final_layer_norm.weight.device

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, 77] input ids: BOS, tokens, EOS, then the tokenizer's pad token (truncated keeps EOS)."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=CLIP_TOKENS, truncation=True, return_tensors="pt").input_ids
        if ids.shape[1] != CLIP_TOKENS:
            raise ValueError(f"CLIP tokenizer produced {ids.shape[1]} tokens per prompt, expected {CLIP_TOKENS}")
        return ids

    def eos_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """[N] pooling positions, as transformers' CLIPTextTransformer chooses them."""
        if self.eos_token_id == LEGACY_EOS_ID:
            return ids.to(torch.int).argmax(-1)
        return (ids.to(torch.int) == self.eos_token_id).int().argmax(-1)

    def _states(self, ids: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """{layer: raw states [N, 77, E]} from one forward pass."""
        self._check_layers(layers)
        with torch.inference_mode():
            out = self.model(ids.to(self.device), output_hidden_states=True)
        return {layer: out.hidden_states[layer].float() for layer in layers}

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """final_layer_norm, [..., E] -> [..., E] float32."""
        return _apply(self.final_layer_norm, states)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """text_projection [N, E] -> [N, P], or identity where pooled vectors stay unprojected."""
        return pooled.float() if self.projection is None else _apply(self.projection, pooled)


class HFT5Backend:
    """A transformers T5 encoder: `last_hidden_state` of exactly 256 tokens per prompt."""

    kind: Literal["t5"] = "t5"
    tokens_per_prompt = T5_TOKENS

    def __init__(self, model: nn.Module, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.width = int(model.config.d_model)
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError(f"T5 tokenizer {type(tokenizer).__name__} needs a pad and an EOS token")
        self.fingerprint = (
            f"hf-t5:{type(model).__name__}:cfg={_config_digest(model)}:w={module_fingerprint(model)}"
            f":pad={tokenizer.pad_token_id}:vocab={len(tokenizer)}:last-hidden-state:{T5_TOKENS}"
        )

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, 256] input ids, padded with the pad token; a cut prompt keeps its EOS last."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=T5_TOKENS, truncation=True, return_tensors="pt").input_ids
        if ids.shape[1] != T5_TOKENS:
            raise ValueError(f"T5 tokenizer produced {ids.shape[1]} tokens per prompt, expected {T5_TOKENS}")
        full = ids[:, -1] != self.tokenizer.pad_token_id
        ids[full, -1] = self.tokenizer.eos_token_id
        return ids

    def encode(self, prompts: Sequence[str], layers: Sequence[int] = (-1,), eos: bool = False) -> Encoding:
        """One forward pass: last_hidden_state [N, 256, E] under every key of `layers` (T5 has one output) and,
        if `eos`, the state at each prompt's EOS [N, E]."""
        ids = self.token_ids(prompts)
        with torch.inference_mode():
            states = self.model(ids.to(self.device)).last_hidden_state.float()
        at_eos = None
        if eos:
            positions = (ids == self.tokenizer.eos_token_id).int().argmax(-1)
            at_eos = states[torch.arange(states.shape[0]), positions.to(states.device)]
        return Encoding({layer: states for layer in layers}, at_eos)

    def hidden_states(self, prompts: Sequence[str], layer: int = -1) -> torch.Tensor:
        """[N, 256, E] last_hidden_state (final RMSNorm applied); `layer` is ignored."""
        return self.encode(prompts, (layer,)).states[layer]

    def empty_query(self) -> torch.Tensor:
        """[1, 256, E] states of the empty prompt."""
        return self.hidden_states([""])

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """Identity: last_hidden_state is already normalized."""
        return states.float()

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Identity: T5 has no projection."""
        return pooled.float()

    def pooled_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, E] the state at each prompt's EOS (T5 has no pooled output; never used by a family)."""
        return self.encode(prompts, (), eos=True).eos


class OpenClipBackend(_ClipStates):
    """An open_clip CLIP text tower (open_clip.CLIP, CustomTextCLIP or a bare TextTransformer).

    `layers` keeps only the first `layers` residual blocks as the encoder (None: all), so
    layer -1 is block `layers`: 23 reads OpenCLIP ViT-H as the published H adapter and SD2
    expect (docs/method.md §5). `project_pooled` works as for HFClipBackend.
    """

    kind: Literal["clip"] = "clip"
    tokens_per_prompt = CLIP_TOKENS

    def __init__(self, model: nn.Module, tokenizer, project_pooled: bool | None = None, layers: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        tower = getattr(model, "text", model)  # CustomTextCLIP holds a TextTransformer; CLIP inlines its parts
        missing = [name for name in ("token_embedding", "positional_embedding", "transformer", "ln_final") if not hasattr(tower, name)]
        if missing:
            raise ValueError(
                f"{type(tower).__name__} is not an open_clip TextTransformer (no {', '.join(missing)}); "
                "read transformers-based text towers with HFClipBackend"
            )
        if getattr(tower, "cls_emb", None) is not None:
            raise ValueError(f"{type(tower).__name__} appends a CLS token (CoCa): it has no EOS-pooled CLIP token for PeCA")
        if getattr(tower, "use_pad_mask", False):
            raise ValueError(f"{type(tower).__name__} masks padding tokens; PeCA's CLIP contexts keep padding visible")
        self.tower = tower
        self.width = int(tower.token_embedding.embedding_dim)
        context = int(tower.positional_embedding.shape[0])
        if context != CLIP_TOKENS:
            raise ValueError(f"{type(model).__name__} reads {context} tokens per prompt; PeCA's CLIP adapters need {CLIP_TOKENS}")
        blocks = len(tower.transformer.resblocks)
        self.layers = blocks if layers is None else int(layers)
        if not 1 <= self.layers <= blocks:
            raise ValueError(f"layers={layers}: {type(model).__name__} has {blocks} text blocks")
        self.pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        self.eos_token_id = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
        if self.pool_type not in ("argmax", "eos", "first", "last"):
            raise ValueError(f"{type(model).__name__} pools text with {self.pool_type!r}: it has no pooled token for PeCA")
        if self.pool_type == "eos" and self.eos_token_id is None:
            raise ValueError(f"{type(model).__name__} pools at its EOS token but names no eos id")
        projection = tower.text_projection
        if project_pooled and projection is None:
            raise ValueError(f"{type(model).__name__} has no text_projection, so its pooled vectors cannot be projected")
        self.projection = projection if project_pooled is not False else None
        probe = self.token_ids(["A photo of 2 cats, watercolor!"])
        self.fingerprint = (  # the text tower's every tensor (not the image tower's, when `model` inlines both)
            f"open-clip:{type(model).__name__}:w={weights_fingerprint(text_tower_tensors(tower))}:blocks={self.layers}/{blocks}"
            f":pool={self.pool_type}:eos={self.eos_token_id}:tok={type(tokenizer).__name__}/{weights_fingerprint([('probe', probe)])}"
            f":projected={self.projection is not None}:raw-pre-ln"
        )

    @property
    def device(self) -> torch.device:
        return self.tower.token_embedding.weight.device

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, 77] ids from the open_clip tokenizer (SimpleTokenizer: SOT, tokens, EOT, zeros)."""
        ids = self.tokenizer(list(prompts), context_length=CLIP_TOKENS)
        if ids.shape != (len(prompts), CLIP_TOKENS):
            raise ValueError(f"open_clip tokenizer produced ids of shape {tuple(ids.shape)}, expected ({len(prompts)}, {CLIP_TOKENS})")
        return ids

    def eos_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """[N] pooling positions by open_clip's rule (argmax: highest id = EOT; eos: first eos id)."""
        if self.pool_type == "argmax":
            return ids.argmax(-1)
        if self.pool_type == "eos":
            return (ids == self.eos_token_id).int().argmax(-1)
        return torch.full((ids.shape[0],), 0 if self.pool_type == "first" else ids.shape[1] - 1, dtype=torch.long)

    def _states(self, ids: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """open_clip's encode_text, once, up to the deepest of `layers` (counted from block `self.layers`), no ln_final."""
        self._check_layers(layers)
        tower, transformer = self.tower, self.tower.transformer
        dtype = transformer.get_cast_dtype()
        after_block = {self.layers + layer: layer for layer in layers}  # block index -> layer read after it
        states = {}
        with torch.inference_mode():
            x = tower.token_embedding(ids.to(self.device)).to(dtype) + tower.positional_embedding.to(dtype)
            if not transformer.batch_first:
                x = x.transpose(0, 1)
            for index, block in enumerate(transformer.resblocks[: max(after_block, default=-1) + 1]):
                x = block(x, attn_mask=tower.attn_mask)
                if index in after_block:
                    states[after_block[index]] = (x if transformer.batch_first else x.transpose(0, 1)).float()
        return states

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """ln_final, [..., E] -> [..., E] float32."""
        return _apply(self.tower.ln_final, states)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """text_projection [N, E] -> [N, P] (`x @ P` or Linear), or identity where pooled vectors stay unprojected."""
        if self.projection is None:
            return pooled.float()
        if isinstance(self.projection, nn.Module):
            return _apply(self.projection, pooled)
        with torch.inference_mode():
            projected = pooled.to(device=self.projection.device, dtype=self.projection.dtype) @ self.projection
        return projected.float().to(pooled.device)
