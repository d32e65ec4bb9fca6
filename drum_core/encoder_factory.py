"""Text encoders by name for training: the published adapters' encoders, transformers folders / hub ids, open_clip models.

    open_encoder("clip-l")                              a name of ENCODERS (the published adapters' encoders)
    open_encoder("/models/sd21:text_encoder")           a transformers folder / hub id, "<repo>:<subfolder>" for diffusers
    open_encoder("open_clip:ViT-bigG-14:laion2b_s39b_b160k", layers=None)   an open_clip text tower
    open_encoder("tiny-clip")                           a tiny random CLIP-L (smoke tests)

A spec that cannot be opened raises EncoderSpecError naming it.
"""

from __future__ import annotations

import os

import torch

from .backend import TextEncoderBackend
from .dtypes import parse_dtype, short_name


class EncoderSpecError(ValueError):
    """An --encoder value that names no encoder drum can train on, or weights it will not read."""


ENCODERS = {  # name -> transformers repo[:subfolder] of the published adapters' encoders
    "clip-l": "openai/clip-vit-large-patch14",
    "openclip-h": "stabilityai/stable-diffusion-2-1:text_encoder",  # 23 of ViT-H's 24 layers, as the H adapter expects
    "openclip-bigg": "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
    "t5-xxl": "google/t5-v1_1-xxl",
}
OPEN_CLIP_PREFIX = "open_clip:"
_TOKENIZER_FOLDERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2", "text_encoder_3": "tokenizer_3"}


def open_encoder(spec: str, device: torch.device | str = "cpu", dtype: str = "fp32", layers: int | None = None) -> TextEncoderBackend:
    """A TextEncoderBackend for `spec`: a name of ENCODERS, "tiny-clip" (random, for smoke tests),
    a transformers folder / hub id, optionally "<repo>:<subfolder>" for a diffusers text encoder,
    or "open_clip:<model>:<pretrained>" / "open_clip:local-dir:<folder>" / "open_clip:hf-hub:<repo>".
    `layers` (open_clip only) keeps the first N text blocks."""
    from . import encoders

    if spec.startswith(OPEN_CLIP_PREFIX):
        return _open_clip_encoder(spec[len(OPEN_CLIP_PREFIX) :], device, dtype, layers)
    if layers is not None:
        raise EncoderSpecError(f"--encoder-layers applies to open_clip encoders only, not {spec}")
    if spec == "tiny-clip":
        from . import tiny

        tokenizer = tiny.clip_tokenizer()
        return encoders.HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH).to(device), tokenizer)
    import transformers

    location = ENCODERS.get(spec.lower(), spec)
    repo, _, subfolder = location.partition(":")
    if _looks_like_a_folder(repo) and not os.path.isdir(repo):
        raise EncoderSpecError(f"{repo}: no such folder (--encoder takes {', '.join(ENCODERS)}, a folder, a hub id or open_clip:...)")
    if os.path.isdir(repo) and not subfolder and os.path.isdir(os.path.join(repo, "text_encoder")):
        raise EncoderSpecError(f"{repo} is a diffusers pipeline folder: name its text encoder, e.g. {repo}:text_encoder")
    if not os.path.isdir(repo):
        from .weights import hub_location

        repo = hub_location(repo, "--encoder")  # one quick request: an unreachable hub or a wrong id is one line
    where = {"subfolder": subfolder} if subfolder else {}
    config = transformers.AutoConfig.from_pretrained(repo, **where)
    tokenizer_where = {"subfolder": _TOKENIZER_FOLDERS.get(subfolder, subfolder)} if subfolder else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(repo, **tokenizer_where)
    model_type = getattr(config, "model_type", "")
    if model_type in ("t5", "umt5"):
        model = transformers.T5EncoderModel.from_pretrained(repo, dtype=parse_dtype(dtype), **where)
        return encoders.HFT5Backend(model.to(device), tokenizer)
    if model_type.startswith("clip"):
        model = transformers.CLIPTextModel.from_pretrained(repo, dtype=parse_dtype(dtype), **where)  # training needs no projection
        return encoders.HFClipBackend(model.to(device), tokenizer)
    raise EncoderSpecError(f"{location}: a {model_type or 'unknown'} model; drum train reads CLIP and T5 text encoders")


def _looks_like_a_folder(location: str) -> bool:
    """A path rather than a hub id ("name" or "namespace/name")."""
    return location.startswith(("/", ".", "~")) or location.count("/") > 1 or (os.sep != "/" and os.sep in location)


def _open_clip_encoder(location: str, device: torch.device | str, dtype: str, layers: int | None = None) -> TextEncoderBackend:
    """An open_clip model's text tower: "<model>:<pretrained tag or .safetensors file>", "local-dir:<folder>"
    (open_clip_config.json + .safetensors weights) or "hf-hub:<repo>"; the image tower is dropped."""
    try:
        import open_clip
    except ImportError as error:
        raise EncoderSpecError(
            f"{OPEN_CLIP_PREFIX}{location}: open_clip cannot be imported ({error}); "
            "pip install 'comfyui-drum[openclip]' with a torchvision that matches your torch"
        ) from error

    from . import encoders

    name, pretrained = location, None
    if not location.startswith(("local-dir:", "hf-hub:")):
        name, _, pretrained = location.partition(":")
        if not pretrained:
            raise EncoderSpecError(
                f"{OPEN_CLIP_PREFIX}{location}: name the weights, e.g. {OPEN_CLIP_PREFIX}{name}:<pretrained tag or .safetensors file>"
            )
    pickled = []
    if pretrained and os.path.isfile(pretrained) and not pretrained.endswith(".safetensors"):
        pickled = [pretrained]
    if location.startswith("local-dir:"):
        folder = location.partition(":")[2]
        if os.path.isdir(folder):
            pickled = [f for f in sorted(os.listdir(folder)) if f.endswith((".bin", ".pth", ".pt"))]
    if pickled:
        raise EncoderSpecError(f"{location}: drum reads open_clip weights from .safetensors only, not {', '.join(pickled)}")
    model = open_clip.create_model(name, pretrained=pretrained, precision=short_name(dtype), device=device, require_pretrained=True)
    model.visual = None  # only the text tower is used
    # training needs no projection
    return encoders.OpenClipBackend(model, open_clip.get_tokenizer(name), project_pooled=False, layers=layers)
