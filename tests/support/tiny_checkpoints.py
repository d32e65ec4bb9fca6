"""Tiny random SD1.5 / SDXL single-file checkpoints that ComfyUI's CheckpointLoaderSimple accepts.

    python tests/support/tiny_checkpoints.py --comfy DIR --arch sd15|sdxl --out FILE

Built with the classes of the ComfyUI tree under test, so key names always match it. Model
detection fixes some sizes (comfy/supported_models.py): SD1.5 UNet model_channels 320,
context 768; SDXL is the KOALA-700M layout (transformer_depth [0, 2, 5], context 2048,
adm 2816). The text encoders keep their full configs (CLIP-L 123M, CLIP-G 695M parameters):
ComfyUI builds them from fixed config files. The VAE is a TAESD (2.4M parameters), which
ComfyUI's VAE class recognises under `first_stage_model.`. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys


def initialise(model, seed: int) -> None:
    """Embeddings N(0, 0.02), matrices N(0, 1/fan_in); norms around 1/0, biases around 0 and any other constant
    random around its value (drum_core.tiny.randomize_constants, the rule of every test model), so that a LayerNorm
    applied or skipped shows. comfy.ops leaves every tensor empty: each is filled here, seeded."""
    import torch

    from drum_core.tiny import randomize_constants

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)) or "norm" in name:
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif isinstance(module, torch.nn.Embedding):
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
                elif name == "bias":
                    p.zero_()
                elif p.dim() < 2:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p[0].numel()))
    randomize_constants(model, seed)


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(comfy: str, arch: str, out: str, seed: int = 0) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [os.path.abspath(comfy), os.path.join(here, "stubs"), ROOT]  # + torchvision stub; this checkout's drum_core
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.clip_model
    import comfy.ops
    import comfy.supported_models
    import comfy.taesd.taesd
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    sys.argv = argv
    torch.set_grad_enabled(False)
    ops = comfy.ops.disable_weight_init
    common = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, legacy=False, use_checkpoint=False)
    common.update(use_spatial_transformer=True, dtype=torch.float32, device="cpu", operations=ops)
    if arch == "sdxl":
        unet = UNetModel(
            num_res_blocks=[1, 1, 1], channel_mult=[1, 1, 1], transformer_depth=[0, 2, 5], transformer_depth_output=[0] * 6,
            transformer_depth_middle=-2, context_dim=2048, num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
            num_classes="sequential", adm_in_channels=2816, **common,
        )  # fmt: skip
    else:
        unet = UNetModel(
            num_res_blocks=[1], channel_mult=[1], transformer_depth=[1], transformer_depth_output=[0, 0], transformer_depth_middle=-1,
            context_dim=768, num_heads=8, num_head_channels=-1, use_linear_in_transformer=False, adm_in_channels=None, **common,
        )  # fmt: skip
    with open(os.path.join(comfy.__path__[0], "sd1_clip_config.json")) as f:
        clip_l = comfy.clip_model.CLIPTextModel(json.load(f), torch.float32, "cpu", ops)
    vae = comfy.taesd.taesd.TAESD()
    for i, model in enumerate((unet, clip_l, vae)):
        initialise(model, seed + i)
    clip_l.text_projection.weight.copy_(torch.eye(768))
    unet.out[2].weight.mul_(0.1)  # small predicted noise: a calm image

    state = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    if arch == "sdxl":
        with open(os.path.join(comfy.__path__[0], "clip_config_bigg.json")) as f:
            clip_g = comfy.clip_model.CLIPTextModel(json.load(f), torch.float32, "cpu", ops)
        initialise(clip_g, seed + 3)
        encoders = {f"clip_l.transformer.{k}": v for k, v in clip_l.state_dict().items()}
        encoders.update({f"clip_g.transformer.{k}": v for k, v in clip_g.state_dict().items()})
        config = comfy.supported_models.SDXL(dict(comfy.supported_models.SDXL.unet_config))
        state.update(config.process_clip_state_dict_for_saving(encoders))  # ComfyUI's own CheckpointSave conversion
    else:
        state.update({f"cond_stage_model.transformer.{k}": v for k, v in clip_l.state_dict().items()})
    state.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    save_atomically({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, out)


def save_atomically(state: dict, out: str) -> None:
    """Write a safetensors file through a temporary name, so a killed build leaves no partial model."""
    from drum_core.atomic import save_safetensors

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_safetensors(state, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", required=True, help="ComfyUI source tree")
    parser.add_argument("--arch", choices=["sd15", "sdxl"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.comfy, args.arch, args.out, args.seed)


if __name__ == "__main__":
    main()
