"""Tiny random-weight ComfyUI text encoders (every supported family, and the refused encoder sets) and PeCA adapters.

Widths stay the real ones (768 / 1024 / 1280 / 4096: ComfyUI's SD3 padding and the adapters
depend on them); depth and feed-forward widths shrink so every CLIP object builds in seconds.
The language models DrUM has no adapter for (HiDream's and HunyuanVideo's Llama, Qwen, Gemma)
shrink to four layers of one 128-wide head (head_dim is fixed by ComfyUI's configs); the refused
sets also get a small vocabulary (they are refused before any token is read).
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
NEW_FAMILIES = ("pixart", "ltxv", "mochi", "hidream")  # the T5 adapter's families, and HiDream
LLM = {"hidden_size": 128, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 1, "num_key_value_heads": 1}
SMALL_VOCAB = {"vocab_size": 1000}
# the encoder sets DrUM refuses -> the attributes their ComfyUI models hold (docs/comfyui.md "Families")
REFUSED = {
    "hunyuan_video": ("clip_l", "llama"),
    "kandinsky5": ("clip_l", "qwen25_7b"),
    "lumina2": ("gemma2_2b",),
    "qwen_image": ("qwen25_7b",),
    "hunyuan_image": ("qwen25_7b", "byt5_small"),
    "omnigen2": ("qwen25_3b",),
    "wan": ("umt5xxl",),
    "cosmos": ("t5xxl",),
    "long_clip_l": ("clip_l",),
}


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
    if family in targets:
        tokenizer, model = targets[family]
    else:
        tokenizer, model = new_target(family)
    return comfy.supported_models_base.ClipTarget(tokenizer, model)


def new_target(family: str):
    """(tokenizer, encoder stack) of the newer families and of the refused sets, as ComfyUI 0.3.75's loaders build them
    (comfy/sd.py load_text_encoder_state_dicts)."""
    import comfy.sd1_clip
    import comfy.text_encoders.cosmos
    import comfy.text_encoders.genmo
    import comfy.text_encoders.hidream
    import comfy.text_encoders.hunyuan_image
    import comfy.text_encoders.hunyuan_video
    import comfy.text_encoders.lt
    import comfy.text_encoders.lumina2
    import comfy.text_encoders.omnigen2
    import comfy.text_encoders.pixart_t5
    import comfy.text_encoders.qwen_image
    import comfy.text_encoders.wan

    targets = {
        "pixart": (comfy.text_encoders.pixart_t5.PixArtTokenizer, comfy.text_encoders.pixart_t5.pixart_te()),  # CHROMA too
        "ltxv": (comfy.text_encoders.lt.LTXVT5Tokenizer, comfy.text_encoders.lt.ltxv_te()),
        "mochi": (comfy.text_encoders.genmo.MochiT5Tokenizer, comfy.text_encoders.genmo.mochi_te()),
        "hidream": (comfy.text_encoders.hidream.HiDreamTokenizer, comfy.text_encoders.hidream.hidream_clip()),
        "hunyuan_video": comfy.text_encoders.hunyuan_video.hunyuan_video_clip(),
        "kandinsky5": kandinsky5_like(),
        "lumina2": comfy.text_encoders.lumina2.te(),
        "qwen_image": comfy.text_encoders.qwen_image.te(),
        "hunyuan_image": comfy.text_encoders.hunyuan_image.te(),
        "omnigen2": comfy.text_encoders.omnigen2.te(),
        "wan": comfy.text_encoders.wan.te(),
        "cosmos": comfy.text_encoders.cosmos.te(),
        "long_clip_l": comfy.sd1_clip.SD1ClipModel,
    }
    target = targets[family]
    # The refused sets are refused from their encoder set alone, before any token is read: SD1's tokenizer stands in for
    # theirs (sentencepiece models that come inside the real checkpoints, slow Qwen and Llama tokenizers).
    return target if isinstance(target, tuple) else (comfy.sd1_clip.SD1Tokenizer, target)


def kandinsky5_like():
    """Kandinsky 5's text-encoder stack (newer ComfyUI, comfy/text_encoders/kandinsky5.py: CLIP-L + Qwen2.5-VL 7B),
    from 0.3.75's own CLIP-L and Qwen2.5-VL classes: the encoder set is what the refusal reads."""
    import comfy.sd1_clip
    import comfy.text_encoders.qwen_image
    import torch

    class Kandinsky5TEModel(torch.nn.Module):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 - ComfyUI's signature
            super().__init__()
            self.clip_l = comfy.sd1_clip.SDClipModel(device=device, dtype=dtype, return_projected_pooled=False, model_options=model_options)
            options = {**model_options, "model_name": "qwen25_7b"}
            self.qwen25_7b = comfy.text_encoders.qwen_image.Qwen25_7BVLIModel(device=device, dtype=dtype, model_options=options)
            self.dtypes = {dtype}

    return Kandinsky5TEModel


def model_options(family: str) -> dict:
    """SHRINK, plus the family's language models at four small layers (a small vocabulary where the set is refused)."""
    options = dict(SHRINK)
    vocab = SMALL_VOCAB if family in REFUSED else {}
    for name in ("llama", "qwen25_7b", "qwen25_3b", "gemma2_2b"):
        options[f"{name}_model_config"] = {**LLM, **vocab}
    options["gemma2_2b_model_config"] = {**LLM, "hidden_size": 256, **vocab}  # Gemma 2's head_dim is 256
    options["umt5xxl_model_config"] = {**SHRINK["t5xxl_model_config"], **vocab}
    options["byt5_small_model_config"] = {"num_layers": 1, "d_ff": 64}
    if family == "long_clip_l":
        options["clip_l_model_config"] = {**SHRINK["clip_l_model_config"], "max_position_embeddings": 248}
    return options


def tiny_clip(family: str, seed: int = 0):
    """A random-weight comfy.sd.CLIP of `family` (a supported family or a key of REFUSED; float32, CPU)."""
    import comfy.sd

    clip = comfy.sd.CLIP(clip_target(family), model_options=model_options(family))
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


def bypass_lora(clip, seed: int, injected: list | None = None):
    """A clone of `clip` with a bypass LoRA as ComfyUI attaches one: an injection (patcher.set_injections) that adds a
    random rank-4 h(x) to the output of clip_l's layer-1 fc2 while the CLIP is loaded. `injected`, if given, holds the
    layer's own forward while the injection is in (empty again once ComfyUI ejects it)."""
    from comfy.patcher_extension import PatcherInjection

    lora = clip.clone()
    layer = lora.cond_stage_model.clip_l.transformer.text_model.encoder.layers[1].mlp.fc2
    generator = torch.Generator().manual_seed(seed)
    down, up = torch.randn(4, layer.in_features, generator=generator) * 0.3, torch.randn(layer.out_features, 4, generator=generator) * 0.3
    original = injected if injected is not None else []

    def inject(_patcher):
        original.append(layer.forward)
        layer.forward = lambda x, *args, **kwargs: original[0](x, *args, **kwargs) + x @ down.T @ up.T

    def eject(_patcher):
        layer.forward = original.pop()

    lora.patcher.set_injections("bypass_lora", [PatcherInjection(inject, eject)])
    return lora
