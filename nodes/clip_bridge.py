"""The one module that touches ComfyUI's CLIP object (comfyui.md, method.md §5).

`ComfySubEncoder` implements `drum_core.backend.TextEncoderBackend` for one sub-encoder of a
`comfy.sd.CLIP` (clip_l, clip_h, clip_g, t5xxl). It tokenises with the CLIP object's own
tokenizer and runs the sub-encoder's transformer directly, so PeCA sees RAW hidden states
(before the final LayerNorm) that ComfyUI's own encode never returns. Nothing is left
modified on the shared modules (`clip.clone()` shares them): options are only reset to their
defaults, the layer to read is passed per call.

Layers: -1 is the top layer of the stack as method.md defines it. For SD2 that is ComfyUI's
-2 of the 24-layer clip_h (the published H adapter was built on the 23-layer diffusers
encoder), so that encoder reads ComfyUI layer `layer - 1`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import comfy.model_management
import comfy.utils
import torch

from drum_core.backend import CLIP_TOKENS, T5_TOKENS
from drum_core.personalizer import detect_family

# tokenizer key -> (attribute on cond_stage_model and on the tokenizer, Personalizer name)
SUB_ENCODERS = {"l": ("clip_l", "l"), "h": ("clip_h", "h"), "g": ("clip_g", "g"), "t5xxl": ("t5xxl", "t5")}
SD3_STACK = ("clip_l", "clip_g", "t5xxl")  # SD3ClipModel defines all three, absent ones are None


class ComfySubEncoder:
    """One ComfyUI sub-encoder seen as a TextEncoderBackend (float32 results on the CPU)."""

    def __init__(self, clip, attribute: str, name: str, layer_shift: int = 0):
        self.clip = clip
        self.attribute = attribute
        self.name = name  # Personalizer name: "l", "h", "g", "t5"
        self.layer_shift = layer_shift  # ComfyUI layer = backend layer + layer_shift
        self.module = getattr(clip.cond_stage_model, attribute)
        self.tokenizer = getattr(clip.tokenizer, attribute)
        self.kind = "clip" if hasattr(self.module.transformer, "text_model") else "t5"
        self.width = self.module.transformer.get_input_embeddings().weight.shape[1]
        self.tokens_per_prompt = CLIP_TOKENS if self.kind == "clip" else T5_TOKENS
        self.fingerprint = _fingerprint(clip, attribute, self.module, layer_shift)

    # ------------------------------------------------------------------ tokens
    def _chunks(self, prompt: str) -> list[list[int]]:
        """Tokens of `prompt`: CLIP 77-token chunks; T5 one list of exactly 256 (EOS kept).

        Emphasis weights like "(word:1.2)" are parsed away and not applied: the adapter reads
        the plain states.
        """
        options = {**self.clip.tokenizer_options, "t5xxl_min_length": T5_TOKENS}
        pairs = self.tokenizer.tokenize_with_weights(prompt, False, tokenizer_options=options)
        chunks = [[token for token, _weight in chunk] for chunk in pairs]  # ids, or embedding tensors
        if self.kind == "clip":
            return chunks
        ids = chunks[0]
        if len(ids) > T5_TOKENS:
            ids = ids[: T5_TOKENS - 1] + [self.module.special_tokens["end"]]
        return [ids]

    def _run(self, chunks: list[list[int]], layer: int) -> tuple[torch.Tensor, list[int]]:
        """Raw states [N, T, E] of backend `layer` for N token lists, and their token counts."""
        sub = self.module
        device = sub.transformer.get_input_embeddings().weight.device
        with torch.inference_mode():
            embeds, mask, num_tokens, info = sub.process_tokens(chunks, device)
            if self.kind == "t5":
                out = sub.transformer(
                    None, mask if sub.enable_attention_masks else None, embeds=embeds, num_tokens=num_tokens, dtype=torch.float32
                )
                return out[0].float().cpu(), num_tokens
            out = sub.transformer(
                None,
                None,
                embeds=embeds,
                num_tokens=num_tokens,
                intermediate_output=layer + self.layer_shift,
                final_layer_norm_intermediate=False,
                dtype=torch.float32,
                embeds_info=info,
            )
        return out[1].float().cpu(), num_tokens

    # ------------------------------------------------------------------ TextEncoderBackend
    def hidden_states(self, prompts: Sequence[str], layer: int = -1) -> torch.Tensor:
        """Raw states [N, T, E]; a long CLIP prompt keeps its first 77-token chunk."""
        states, _ = self._run([self._chunks(p)[0] for p in prompts], layer)
        return states

    def prompt_chunks(self, prompt: str, layer: int = -1) -> torch.Tensor:
        """Raw states [C, 77, E] of every 77-token chunk of a (long) CLIP prompt."""
        states, _ = self._run(self._chunks(prompt), layer)
        return states

    def _top_with_eos(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw top-layer states [N, T, E] and the raw state at each EOS [N, E]."""
        states, num_tokens = self._run([self._chunks(p)[0] for p in prompts], -1)
        eos = states[torch.arange(len(prompts)), torch.tensor(num_tokens) - 1]
        return states, eos

    def empty_query(self) -> torch.Tensor:
        """CLIP [1, 78, E] (raw states of "" + raw EOS state); T5 [1, 256, E]."""
        if self.kind == "t5":
            return self.hidden_states([""])
        states, eos = self._top_with_eos([""])
        return torch.cat([states, eos[:, None]], 1)

    def final_norm(self, states: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm ([..., E]), float32 on the states' device; identity for T5."""
        if self.kind == "t5":
            return states
        norm = self.module.transformer.text_model.final_layer_norm
        with torch.inference_mode():
            return norm(states.to(norm.weight.device, torch.float32)).float().to(states.device)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """[N, E] -> [N, P]: the text projection where this encoder's pooled output is projected."""
        if self.kind == "t5" or not self.module.return_projected_pooled:
            return pooled
        projection = self.module.transformer.text_projection
        with torch.inference_mode():
            return projection(pooled.to(projection.weight.device, torch.float32)).float().to(pooled.device)

    def pooled_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[N, P] = project(final_norm(raw top-layer EOS state)): ComfyUI's pooled_output."""
        _, eos = self._top_with_eos(prompts)
        return self.project(self.final_norm(eos))


def _digest_tensor(digest, tensor: torch.Tensor) -> None:
    """Feed shape, dtype and the first and last rows of `tensor` (cheap, catches LoRA deltas)."""
    flat = tensor.detach().reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.detach().reshape(1, -1)
    rows = torch.cat([flat[:1], flat[-1:]]).float().cpu().contiguous()
    digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    digest.update(rows.numpy().tobytes())


def _fingerprint(clip, attribute: str, module: torch.nn.Module, layer_shift: int) -> str:
    """Weights identity (sampled rows of every tensor, after LoRA patches) + layer conventions."""
    digest = hashlib.sha256(f"comfy|{attribute}|{type(module).__name__}|shift{layer_shift}|t5len{T5_TOKENS}".encode())
    for key, tensor in sorted(module.state_dict().items()):
        if tensor.dim() > 0 and tensor.numel() > 0:
            digest.update(key.encode())
            _digest_tensor(digest, tensor)
    prefix = f"{attribute}."
    for key in sorted(k for k in clip.patcher.patches if k.startswith(prefix)):
        for patch in clip.patcher.patches[key]:  # lowvram keeps patches out of the weights
            digest.update(f"{key}|{patch[0]}|{patch[2]}".encode())
            value = patch[1]
            tensors = getattr(value, "weights", value if isinstance(value, (tuple, list)) else (value,))
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.dim() > 0:
                    _digest_tensor(digest, t)
    return digest.hexdigest()[:32]


def prepare(clip) -> None:
    """Load the encoders (applies CLIP LoRAs) and reset every sub-encoder option to its default."""
    clip.load_model()
    clip.cond_stage_model.reset_clip_options()


def sub_encoders(clip) -> dict[str, ComfySubEncoder]:
    """The CLIP object's encoders by Personalizer name ("l", "h", "g", "t5"), after `prepare`."""
    model = clip.cond_stage_model
    encoders = {}
    for attribute, name in SUB_ENCODERS.values():
        if getattr(model, attribute, None) is not None:
            encoders[name] = ComfySubEncoder(clip, attribute, name, layer_shift=-1 if name == "h" else 0)
    if not encoders:
        raise ValueError(f"DrUM: this CLIP ({type(model).__name__}) has no CLIP-L/H/bigG or T5-XXL text encoder")
    return encoders


def family_of(clip, encoder_names) -> str:
    """ "sd1" | "sd2" | "sdxl" | "sd3" | "flux", from the encoder stack (never a model name)."""
    if all(hasattr(clip.cond_stage_model, a) for a in SD3_STACK):
        return "sd3"  # an SD3 stack, even when some of its encoders were not loaded
    return detect_family(encoder_names)


def token_layer(clip, family: str) -> int | None:
    """CLIPSetLastLayer (clip.layer_idx) in backend layers; None keeps the family default."""
    if clip.layer_idx is None:
        return None
    return clip.layer_idx + 1 if family == "sd2" else clip.layer_idx


def first_clip_encoder(encoders: dict[str, ComfySubEncoder]) -> ComfySubEncoder:
    """The encoder whose pooled features drive the coreset: CLIP-L, or CLIP-H for SD2."""
    for name in ("l", "h", "g"):
        if name in encoders:
            return encoders[name]
    raise ValueError(f"DrUM: the coreset needs a CLIP text encoder; this model only has {sorted(encoders)}")


def plain_conditioning(clip, text: str) -> list:
    """ComfyUI's own CLIPTextEncode output for `text` (the no-history result)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def hooks_extras(clip) -> dict:
    """Extras ComfyUI's text encode adds for this CLIP (scheduled hooks)."""
    return clip.add_hooks_to_dict({})


def adapter_device() -> torch.device:
    """Where adapters run: the text encoders' device."""
    return comfy.model_management.text_encoder_device()


def output_device() -> torch.device:
    return comfy.model_management.intermediate_device()


def progress_reporter() -> Callable[[int, int], None]:
    """A Personalizer/EmbeddingCache progress callback: ComfyUI progress bar (of the running node) + interruption."""
    bar: list[comfy.utils.ProgressBar] = []

    def report(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        if not bar:
            bar.append(comfy.utils.ProgressBar(total))
        bar[0].update_absolute(done, total)

    return report
