"""What a training run reads: captions encoded on the fly, or rows of a caption cache; one order per epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..backend import TextEncoderBackend
from .caption_cache import CaptionCache
from .captions import CaptionSplit, shuffled
from .recipe import caption_targets


class StreamedCaptions:
    """Captions read from their source every epoch and encoded on the fly."""

    def __init__(self, split: CaptionSplit, backend: TextEncoderBackend, shuffle_buffer: int, seed: int):
        self.split = split
        self.backend = backend
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.train_count = split.train_count()
        if self.train_count == 0:
            raise split.no_training_captions()
        self.validation_items: list[str] = split.validation()
        self.kind, self.width = backend.kind, backend.width

    def epoch_order(self, epoch: int) -> Iterator[str]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return shuffled(self.split.train(), self.shuffle_buffer, generator)

    def load(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return caption_targets(self.backend, captions)

    load_validation = load

    def query(self) -> torch.Tensor:
        with torch.no_grad():
            return self.backend.empty_query().float().clone()

    def identity(self) -> dict:
        return {"fingerprint": self.backend.fingerprint, "train_count": self.train_count, "source": self.split.source.describe()}


class CachedCaptions:
    """Captions read from a caption cache, in a full random permutation per epoch."""

    def __init__(self, cache: CaptionCache, seed: int):
        self.cache = cache
        self.seed = seed
        self.train_count = cache.train_count
        self.validation_items = list(range(cache.validation_count))
        self.kind, self.width = cache.kind, cache.width

    def epoch_order(self, epoch: int) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.randperm(self.train_count, generator=generator).tolist())

    def load(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.cache.train_rows(rows)

    def load_validation(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.cache.validation_rows(rows)

    def query(self) -> torch.Tensor:
        return self.cache.query()

    def identity(self) -> dict:
        return {"fingerprint": self.cache.fingerprint, "train_count": self.train_count, "source": self.cache.index["source"]}


Captions = StreamedCaptions | CachedCaptions
