"""The caption cache: raw encoder states of every training caption, encoded once, in safetensors shards.

    <dir>/index.json                  kind, width, tokens, fingerprint, counts, source
    <dir>/query.safetensors           "query" [1, S, E], the encoder's empty-prompt query
    <dir>/train-00000.safetensors     raw last-layer "states" [n, T, E] (+ "eos" [n, E] for CLIP), captions in metadata
    <dir>/val-00000.safetensors       the held-out captions, same layout

Shard k always holds training captions k * shard_rows ... (k + 1) * shard_rows - 1 of the
stream, so an interrupted build resumes by skipping the shards already written, and
several processes can build one cache together (process r writes the shards k with
k % world == r). Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import torch

from ..atomic import atomic_path, save_safetensors
from ..backend import TextEncoderBackend
from ..dtypes import dtype_name, parse_dtype
from .captions import CaptionSplit, batched
from .recipe import caption_targets

CACHE_FORMAT = "drum-caption-cache"
CACHE_VERSION = 1


class CaptionCacheError(ValueError):
    """A caption cache that is incomplete, foreign to this encoder or damaged."""


def _write_json_atomic(data: dict, path: str) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def _shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.safetensors"


class CaptionCache:
    """A finished cache directory, read row by row (memory-mapped, never all in memory)."""

    def __init__(self, directory: str | os.PathLike, open_files: int = 32):
        self.directory = os.fspath(directory)
        path = os.path.join(self.directory, "index.json")
        if not os.path.isfile(path):
            raise CaptionCacheError(f"{self.directory}: not a caption cache (no index.json); build it with --cache")
        try:
            with open(path, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise CaptionCacheError(f"{path}: unreadable caption cache index ({error})") from error
        if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
            raise CaptionCacheError(f"{path}: not a {CACHE_FORMAT} v{CACHE_VERSION} index")
        self.index = index
        self.kind: str = index["kind"]
        self.width: int = index["width"]
        self.tokens: int = index["tokens"]
        self.fingerprint: str = index["fingerprint"]
        self.shard_rows: int = index["shard_rows"]
        self.train_count: int = index["train_count"]
        self.validation_count: int = index["validation_count"]
        self._open_files = open_files
        self._handles: OrderedDict[str, object] = OrderedDict()

    def query(self) -> torch.Tensor:
        """The encoder's empty-prompt query [1, S, E] (float32)."""
        from safetensors.torch import load_file

        return load_file(os.path.join(self.directory, "query.safetensors"))["query"].float()

    def check_encoder(self, backend: TextEncoderBackend) -> None:
        """Raise CaptionCacheError unless this cache was built with `backend`."""
        if backend.fingerprint != self.fingerprint:
            raise CaptionCacheError(
                f"{self.directory} holds states of encoder {self.fingerprint!r}, not of {backend.fingerprint!r}: use another --cache directory"
            )

    def _handle(self, name: str):
        from safetensors import safe_open

        if name not in self._handles:
            path = os.path.join(self.directory, name)
            try:
                self._handles[name] = safe_open(path, "pt")
            except Exception as error:
                raise CaptionCacheError(f"{path}: unreadable cache shard ({error}); delete it and build the cache again") from error
            while len(self._handles) > self._open_files:
                self._handles.popitem(last=False)
        self._handles.move_to_end(name)
        return self._handles[name]

    def _rows(self, split: str, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, eos = [], []
        for i in indices:
            shard, row = divmod(int(i), self.shard_rows)
            handle = self._handle(_shard_name(split, shard))
            states.append(handle.get_slice("states")[row : row + 1])
            if self.kind == "clip":
                eos.append(handle.get_slice("eos")[row : row + 1])
        return torch.cat(states).float(), torch.cat(eos).float() if eos else None

    def train_rows(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training captions by global row index: states [n, T, E], eos [n, E] or None (T5)."""
        bad = [i for i in indices if not 0 <= i < self.train_count]
        if bad:
            raise IndexError(f"{self.directory}: training rows {bad[:5]} out of range 0..{self.train_count - 1}")
        return self._rows("train", indices)

    def validation_rows(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._rows("val", indices)

    def captions(self, split: str = "train") -> Iterator[str]:
        """The cached captions in row order (from the shard metadata)."""
        from safetensors import safe_open

        count = self.train_count if split == "train" else self.validation_count
        for k in range((count + self.shard_rows - 1) // self.shard_rows):
            with safe_open(os.path.join(self.directory, _shard_name(split, k)), "pt") as f:
                yield from json.loads(f.metadata()["captions"])


def build_caption_cache(
    directory: str | os.PathLike,
    split: CaptionSplit,
    backend: TextEncoderBackend,
    shard_rows: int = 1024,
    encode_batch: int = 64,
    dtype: str = "float16",
    rank: int = 0,
    world_size: int = 1,
    progress: Callable[[int], None] | None = None,
    barrier: Callable[[], None] | None = None,
) -> CaptionCache:
    """Encode `split` once into `directory` (resumable; shards k % world_size == rank here).

    `progress(n)` is called with the number of captions just encoded; `barrier()` waits
    for the other processes of a distributed build before rank 0 writes the index.
    """
    dtype = dtype_name(dtype)  # "fp16" -> "float16", what the index records
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    index_path = os.path.join(directory, "index.json")
    if os.path.isfile(index_path):
        cache = CaptionCache(directory)
        cache.check_encoder(backend)
        return cache
    meta = {"fingerprint": backend.fingerprint, "kind": backend.kind}
    storage = parse_dtype(dtype)

    def write_shard(name: str, captions: list[str]) -> None:
        path = os.path.join(directory, name)
        if _shard_complete(path, len(captions), meta):
            return
        states, eos = [], []
        for chunk in batched(captions, encode_batch):
            s, e = caption_targets(backend, chunk)
            states.append(s.to(storage).cpu())
            if e is not None:
                eos.append(e.to(storage).cpu())
            if progress is not None:
                progress(len(chunk))
        tensors = {"states": torch.cat(states)}
        if eos:
            tensors["eos"] = torch.cat(eos)
        save_safetensors(tensors, path, {**meta, "rows": str(len(captions)), "captions": json.dumps(captions, ensure_ascii=False)})

    train_count = 0
    shard = 0
    for shard, captions in enumerate(batched(split.train(), shard_rows)):
        train_count += len(captions)
        if shard % world_size == rank:
            write_shard(_shard_name("train", shard), captions)
    if train_count == 0:
        raise split.no_training_captions()
    validation = split.validation()
    for k, captions in enumerate(batched(validation, shard_rows)):
        if (shard + 1 + k) % world_size == rank:
            write_shard(_shard_name("val", k), captions)
    if rank == 0:
        with torch.no_grad():
            query = backend.empty_query().float().cpu()
        save_safetensors({"query": query}, os.path.join(directory, "query.safetensors"), meta)
    if barrier is not None:
        barrier()
    if rank == 0:
        index = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "kind": backend.kind,
            "width": backend.width,
            "tokens": backend.tokens_per_prompt,
            "fingerprint": backend.fingerprint,
            "dtype": dtype,
            "shard_rows": shard_rows,
            "train_count": train_count,
            "validation_count": len(validation),
            "validation_fraction": split.validation_fraction,
            "source": split.source.describe(),
        }
        _write_json_atomic(index, index_path)
    if barrier is not None:
        barrier()
    return CaptionCache(directory)


def _shard_complete(path: str, rows: int, meta: dict[str, str]) -> bool:
    """A shard already written by an earlier (interrupted) build for the same encoder."""
    if not os.path.isfile(path):
        return False
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            found = f.metadata() or {}
    except Exception:  # truncated or foreign: write it again
        return False
    return found.get("rows") == str(rows) and all(found.get(k) == v for k, v in meta.items())
