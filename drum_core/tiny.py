"""Tiny random-weight models: tokenizers, text encoders, diffusers pipelines, PeCA adapters.

They verify an install and drive the tests without any download: every output is noise.
Widths keep the real structure where it matters (CLIP widths are multiples of 64 so PeCA
has whole heads; T5 keeps its real 4096 width with tiny inner sizes, so SD3/FLUX assembly
runs exactly as with the real models).

    family  text encoders                                  adapters
    sd1     l: CLIPTextModel 64 (quick_gelu)               L
    sd2     h: CLIPTextModel 128 (gelu, OpenCLIP-like)     H
    sdxl    l: CLIPTextModel 64, g: ...WithProjection 128  L, bigG
    sd3     l, g WithProjection + t5: T5EncoderModel 4096  L, bigG, T5
    flux    l: CLIPTextModel 64 + t5: T5EncoderModel 4096  L, T5
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

from .adapter_names import PUBLISHED_SIZES
from .peca import PeCA, PeCAConfig

FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux")
# the tiny encoders' widths (the real ones are in adapter_names.PUBLISHED_SIZES)
L_WIDTH = 64
H_WIDTH = 128
G_WIDTH = 128
T5_WIDTH = 4096
T5_ADAPTER_WIDTH = 64  # d inside the tiny T5 adapter (the release's is T5_WIDTH / 4)
PROJECTION_WIDTH = 32
CLIP_LAYERS = 3
ADAPTER_LAYERS = 2
IMAGE_SIZE = 32
HISTORY = [
    "a watercolor painting of a red fox in a snowy forest",
    "watercolor fox sleeping under a pine tree",
    "a watercolor owl on a branch at dawn",
    "an oil painting of a stormy sea with a small boat",
    "oil painting of waves crashing on black rocks",
    "a cozy cabin in the mountains, warm light, winter night",
    "a snowy mountain village at night, lanterns",
    "a cat wearing a tiny wizard hat, studio photo",
    "portrait of a tabby cat, soft light, 85mm",
    "a lighthouse on a rocky coast, watercolor",
    "misty pine forest at sunrise, watercolor",
    "a red fox running through tall grass, golden hour",
]


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet: 256 printable characters standing for the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]  # U+00A1..U+00AC, U+00AE..U+00FF
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A character-level CLIPTokenizer (no merges); EOS is the highest id, as in real CLIP.

    pad_token "<|endoftext|>" pads like SD1's tokenizer, "!" (id 0) like SDXL's tokenizer_2 / SD2's.
    """
    from transformers import CLIPTokenizer

    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as folder:
        vocab, merges = Path(folder, "vocab.json"), Path(folder, "merges.txt")
        vocab.write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
        merges.write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer(str(vocab), str(merges), pad_token=pad_token, model_max_length=77)


def t5_tokenizer():
    """A small unigram T5 tokenizer (pad 0, EOS 1, unk 2) that appends EOS like T5's."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    space = "\u2581"  # SentencePiece's word-start mark
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (space, -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    pieces += [(space + c, -2.5) for c in string.ascii_lowercase + string.digits]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def randomize_constants(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter that holds one value throughout (LayerNorm / RMSNorm weights 1 and biases 0,
    zero linear biases, a constant scale) seeded random values around it: c * (1 + 0.2 * N(0, 1)), or 0.1 * N(0, 1)
    where c = 0. With norms at 1/0 applying or skipping a LayerNorm on states that already left one is
    invisible, and a zero bias hides every rule about biases; the test models must be able to show both."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            flat = p.detach().reshape(-1)
            if flat.numel() == 0 or not bool((flat == flat[0]).all()):
                continue
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            c = float(flat[0])
            p.copy_((c * (1 + 0.2 * noise) if c != 0 else 0.1 * noise).to(p.dtype))
    return module


def clip_text_model(tokenizer, width: int, projection: bool = False, hidden_act: str = "quick_gelu", seed: int = 0):
    """A random CLIPTextModel (or ...WithProjection) of `width`, 3 layers, 77 positions."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=CLIP_LAYERS,
        num_attention_heads=width // 32,
        max_position_embeddings=77,
        projection_dim=PROJECTION_WIDTH,
        hidden_act=hidden_act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    return randomize_constants(model, seed).eval()


def t5_encoder(tokenizer, seed: int = 0):
    """A random T5EncoderModel of the real width 4096 with tiny inner sizes (about 1.6M parameters)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=T5_WIDTH,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = T5EncoderModel(config)
    return randomize_constants(model, seed).eval()


def adapter(kind: str, encoder_width: int, seed: int = 0) -> PeCA:
    """A random 2-block PeCA for an encoder, built as the release builds one, but T5 d = 64 inside."""
    torch.manual_seed(seed)
    model = PeCA(PeCAConfig.for_encoder(kind, encoder_width, ADAPTER_LAYERS, width=T5_ADAPTER_WIDTH if kind == "t5" else None))
    with torch.no_grad():
        model.base_query.normal_()
    return randomize_constants(model, seed).eval()


def adapters(family: str, seed: int = 0) -> dict[str, PeCA]:
    """The tiny adapters of a family, keyed by adapter name ("L", "H", "bigG", "T5")."""
    widths = {"L": L_WIDTH, "H": H_WIDTH, "bigG": G_WIDTH, "T5": T5_WIDTH}
    names = {"sd1": ["L"], "sd2": ["H"], "sdxl": ["L", "bigG"], "sd3": ["L", "bigG", "T5"], "flux": ["L", "T5"]}[family]
    return {name: adapter(PUBLISHED_SIZES[name][0], widths[name], seed=seed + i) for i, name in enumerate(names)}


def _unet(cross_attention_dim: int, sdxl: bool = False):
    from diffusers import UNet2DConditionModel

    extra = {}
    if sdxl:
        extra = dict(
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=PROJECTION_WIDTH + 6 * 8
        )
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=4,
        **extra,
    )


def _vae(latent_channels: int = 4, flow: bool = False):
    from diffusers import AutoencoderKL

    if flow:  # SD3 / FLUX: no quant convs, one block (scale factor 1)
        return AutoencoderKL(
            block_out_channels=(8,),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=4,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
            sample_size=IMAGE_SIZE,
        )
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=IMAGE_SIZE,
    )


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )


def pipeline(family: str = "sd1", seed: int = 0):
    """A tiny random diffusers pipeline of `family` (32x32 images), float32 on the CPU; the encoders' norms and
    biases random too (randomize_constants)."""
    import diffusers

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; one of {', '.join(FAMILIES)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if family in ("sd1", "sd2"):
            sd2 = family == "sd2"
            tokenizer = clip_tokenizer("!" if sd2 else "<|endoftext|>")
            encoder = clip_text_model(
                tokenizer,
                H_WIDTH if sd2 else L_WIDTH,
                hidden_act="gelu" if sd2 else "quick_gelu",
                seed=seed,
            )
            return diffusers.StableDiffusionPipeline(
                vae=_vae(),
                text_encoder=encoder,
                tokenizer=tokenizer,
                unet=_unet(encoder.config.hidden_size),
                scheduler=_ddim(),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        tokenizer = clip_tokenizer()
        l_encoder = clip_text_model(tokenizer, L_WIDTH, projection=family == "sd3", seed=seed)
        if family == "sdxl":
            tokenizer_2 = clip_tokenizer("!")
            return diffusers.StableDiffusionXLPipeline(
                vae=_vae(),
                text_encoder=l_encoder,
                text_encoder_2=clip_text_model(tokenizer_2, G_WIDTH, projection=True, hidden_act="gelu", seed=seed + 1),
                tokenizer=tokenizer,
                tokenizer_2=tokenizer_2,
                unet=_unet(L_WIDTH + G_WIDTH, sdxl=True),
                scheduler=_ddim(),
            )
        t5_tok = t5_tokenizer()
        t5 = t5_encoder(t5_tok, seed=seed + 2)
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
        dit = dict(in_channels=4, num_layers=1, num_attention_heads=2, joint_attention_dim=T5_WIDTH)  # both tiny transformers
        if family == "sd3":
            tokenizer_2 = clip_tokenizer("!")
            transformer = diffusers.SD3Transformer2DModel(
                **dit,
                sample_size=IMAGE_SIZE,
                patch_size=2,
                attention_head_dim=8,
                caption_projection_dim=16,
                pooled_projection_dim=2 * PROJECTION_WIDTH,
                out_channels=4,
                pos_embed_max_size=IMAGE_SIZE,
            )
            return diffusers.StableDiffusion3Pipeline(
                transformer=transformer,
                scheduler=scheduler,
                vae=_vae(4, flow=True),
                text_encoder=l_encoder,
                tokenizer=tokenizer,
                text_encoder_2=clip_text_model(tokenizer_2, G_WIDTH, projection=True, hidden_act="gelu", seed=seed + 1),
                tokenizer_2=tokenizer_2,
                text_encoder_3=t5,
                tokenizer_3=t5_tok,
            )
        transformer = diffusers.FluxTransformer2DModel(
            **dit,
            patch_size=1,
            num_single_layers=1,
            attention_head_dim=16,
            pooled_projection_dim=L_WIDTH,
            axes_dims_rope=(4, 4, 8),
        )
        return diffusers.FluxPipeline(
            scheduler=scheduler,
            vae=_vae(1, flow=True),
            text_encoder=l_encoder,
            tokenizer=tokenizer,
            text_encoder_2=t5,
            tokenizer_2=t5_tok,
            transformer=transformer,
        )
