"""Tiny random-weight ComfyUI text encoders (all five families) and PeCA adapters.

Widths stay the real ones (768 / 1024 / 1280 / 4096: ComfyUI's SD3 padding and the adapters
depend on them); depth and feed-forward widths shrink so every CLIP object builds in seconds.
comfy.ops creates parameters uninitialised, so every tensor is filled here, seeded.
"""

from __future__ import annotations

import math

import torch

from drum_core.peca import PUBLISHED_SIZES, PeCA, PeCAConfig
from drum_core.tiny import randomize_constants

CLIP_LAYERS = 3  # SD2 reads ComfyUI layer -2 for the top and -3 under CLIPSetLastLayer(-2)
SHRINK = {
    "dtype": torch.float32,
    "clip_l_model_config": {"num_hidden_layers": CLIP_LAYERS, "intermediate_size": 128},
    "clip_h_model_config": {"num_hidden_layers": CLIP_LAYERS, "intermediate_size": 128},
    "clip_g_model_config": {"num_hidden_layers": CLIP_LAYERS, "intermediate_size": 128},
    "t5xxl_model_config": {"num_layers": 2, "d_ff": 128, "num_heads": 4},
}
FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux")


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Embeddings N(0, 0.02), matrices N(0, 1/fan_in); norms around 1/0 and biases around 0, random too
    (drum_core.tiny.randomize_constants), so a LayerNorm applied or skipped shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if "norm" in name:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            elif name.endswith("bias"):
                p.zero_()
            elif "embedding" in name or name.endswith("shared.weight") or "relative_attention_bias" in name or p.dim() < 2:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[-1]))
    randomize_constants(module, seed)


def clip_target(family: str):
    """ComfyUI's own (tokenizer, encoder stack) pair for a family."""
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base
    import comfy.text_encoders.flux
    import comfy.text_encoders.sd2_clip
    import comfy.text_encoders.sd3_clip

    targets = {
        "sd1": (comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel),
        "sd2": (comfy.text_encoders.sd2_clip.SD2Tokenizer, comfy.text_encoders.sd2_clip.SD2ClipModel),
        "sdxl": (comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel),
        "sd3": (comfy.text_encoders.sd3_clip.SD3Tokenizer, comfy.text_encoders.sd3_clip.sd3_clip()),
        "flux": (comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip()),
    }
    tokenizer, model = targets[family]
    return comfy.supported_models_base.ClipTarget(tokenizer, model)


def tiny_clip(family: str, seed: int = 0):
    """A random-weight comfy.sd.CLIP of `family` (float32, CPU)."""
    import comfy.sd

    clip = comfy.sd.CLIP(clip_target(family), model_options=dict(SHRINK))
    randomize(clip.cond_stage_model, seed)
    return clip


def tiny_adapter(name: str, seed: int = 0, layers: int = 2):
    """A random 2-block PeCA with the published widths of `name` ("L", "H", "bigG", "T5")."""
    torch.manual_seed(seed)
    adapter = PeCA(PeCAConfig.for_encoder(*PUBLISHED_SIZES[name], layers=layers))
    with torch.no_grad():
        for block in adapter.tf:  # keep the blocks well-conditioned: small attention and FFN outputs
            block.attn.proj.weight.mul_(0.5)
            block.ff[2].weight.mul_(0.5)
    return randomize_constants(adapter, seed).eval()
