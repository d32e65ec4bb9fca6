"""drum_core: the DrUM method (arXiv 2508.03481) in plain PyTorch, no ComfyUI import.

Public API (see docs/api.md): PeCA, coreset_sample, load_history / History /
HistoryError, EmbeddingCache, Personalizer / detect_family / UnsupportedFamilyError, Profile / ProfileFormatError,
TextEncoderBackend.
"""

from .backend import TextEncoderBackend
from .cache import EmbeddingCache
from .coreset import coreset_sample
from .evaluate.datasets import load_movielens
from .history import History, HistoryError, load_history, parse_history_text
from .peca import PeCA, PeCAConfig, PeCAFormatError, ReferenceState
from .personalizer import AdapterMismatchError, Condition, Personalizer, UnsupportedFamilyError, detect_family
from .profiles import Profile, ProfileFormatError

__all__ = [
    "AdapterMismatchError",
    "Condition",
    "EmbeddingCache",
    "History",
    "HistoryError",
    "PeCA",
    "PeCAConfig",
    "PeCAFormatError",
    "Personalizer",
    "Profile",
    "ProfileFormatError",
    "ReferenceState",
    "TextEncoderBackend",
    "UnsupportedFamilyError",
    "coreset_sample",
    "detect_family",
    "load_history",
    "load_movielens",
    "parse_history_text",
]
