"""Tiny random FLUX / SD3 diffusion transformers (for UNETLoader) and a 16-channel VAE (for VAELoader).

    cd tests && python -m support.tiny_dit --model flux|sd3|vae16 --out FILE   # DRUM_COMFY_DIR picks the tree

Built with the classes of the ComfyUI tree under test, so key names always match it. Model
detection (comfy/model_detection.py) fixes the sizes that cannot shrink:
- FLUX: 24 heads and RoPE axes [16, 56, 56] make the hidden size 3072; the T5 context is 4096
  wide. One double block and no single block is the smallest model ComfyUI still detects as
  FLUX.1-dev (guidance embedding on): 404M parameters, bf16 on disk (808 MB).
- SD3: MMDiT `depth` sets the block count, the heads and the hidden size (64 x depth), so depth 2
  gives 2 blocks of width 128 (1.9M parameters, with a 16x16 position table for latents up to 32x32).
  The context embedder still reads 4096-wide T5 states, y_embedder the 2048-wide pooled vector.
- VAE: the 16-channel KL autoencoder of FLUX and SD3 has fixed channel widths (84M parameters),
  stored in fp16 (168 MB). The latent format (scale, shift) belongs to the diffusion model, not the VAE.
"""

from __future__ import annotations

import argparse

from .comfy_env import import_comfy
from .tiny_checkpoints import initialise, save_atomically

MODELS = ("flux", "sd3", "vae16")


def flux_model():
    """A FLUX.1-dev-layout Flux (1 double block, 0 single blocks), output layer scaled down for calm images."""
    import comfy.ops
    import torch
    from comfy.ldm.flux.model import Flux

    model = Flux(
        image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
        mlp_ratio=4.0, num_heads=24, depth=1, depth_single_blocks=0, axes_dim=[16, 56, 56], theta=10000, patch_size=2,
        qkv_bias=True, guidance_embed=True, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init,
    )  # fmt: skip
    initialise(model, seed=0)
    model.final_layer.linear.weight.mul_(0.1)
    return model


def sd3_model():
    """An SD3-medium-layout MMDiT of depth 2 (hidden 128, 2 heads), with SD3's sin-cos position table (a buffer)."""
    import comfy.ops
    import torch
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper, get_2d_sincos_pos_embed

    model = OpenAISignatureMMDITWrapper(
        input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
        num_patches=256, pos_embed_max_size=16, pos_embed_scaling_factor=None, dtype=torch.float32, device="cpu",
        operations=comfy.ops.disable_weight_init,
    )  # fmt: skip
    initialise(model, seed=1)
    model.pos_embed.copy_(torch.from_numpy(get_2d_sincos_pos_embed(128, 16))[None])
    model.final_layer.linear.weight.mul_(0.1)
    return model


def vae16_model():
    """The 16-channel KL autoencoder ComfyUI's VAE class builds for a FLUX/SD3 `ae.safetensors`."""
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    ddconfig = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128}
    ddconfig.update(ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    model = AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": ddconfig},
        decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": ddconfig},
    )
    initialise(model, seed=2)
    return model


def build(model: str, out: str) -> None:
    """Write the tiny `model` ("flux", "sd3", "vae16") to `out` (atomically)."""
    import_comfy()
    import torch

    torch.set_grad_enabled(False)
    module = {"flux": flux_model, "sd3": sd3_model, "vae16": vae16_model}[model]()
    dtype = {"flux": torch.bfloat16, "sd3": torch.float16, "vae16": torch.float16}[model]
    state = {k: v.to(dtype).contiguous() for k, v in module.state_dict().items()}
    unset = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if unset:
        raise RuntimeError(f"tiny {model}: tensors left uninitialised (comfy.ops creates them empty): {unset}")
    save_atomically(state, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    build(args.model, args.out)


if __name__ == "__main__":
    main()
