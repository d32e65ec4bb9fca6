"""drum_core: the DrUM method (arXiv 2508.03481) in plain PyTorch, no ComfyUI import."""

from .peca import PeCA, PeCAConfig, PeCAFormatError, ReferenceState

__all__ = ["PeCA", "PeCAConfig", "PeCAFormatError", "ReferenceState"]
