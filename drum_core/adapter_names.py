"""The published PeCA adapters (`weight/{L,H,bigG,T5}.safetensors`) and the encoders they serve.

One table for the whole package (files, node slots, encoder names, sizes):

    adapter  kind  encoder width E  encoder (Personalizer / ComfyUI name)
    L        clip  768              l   CLIP-L
    H        clip  1024             h   OpenCLIP-H (SD2)
    bigG     clip  1280             g   OpenCLIP-bigG
    T5       t5    4096             t5  T5-XXL
"""

from __future__ import annotations

PUBLISHED_SIZES = {"L": ("clip", 768), "H": ("clip", 1024), "bigG": ("clip", 1280), "T5": ("t5", 4096)}  # name -> (kind, E)
ADAPTER_NAMES = tuple(PUBLISHED_SIZES)
ENCODER_ADAPTERS = {"l": "L", "h": "H", "g": "bigG", "t5": "T5"}  # encoder name -> adapter name
ENCODER_TITLES = {"L": "CLIP-L", "H": "OpenCLIP-H (SD2)", "bigG": "OpenCLIP-bigG", "T5": "T5-XXL"}  # adapter name -> encoder, for people


def published_name(kind: str, encoder_width: int) -> str | None:
    """ "L", "H", "bigG" or "T5" for an adapter of a published size, else None."""
    return next((name for name, size in PUBLISHED_SIZES.items() if size == (kind, encoder_width)), None)
