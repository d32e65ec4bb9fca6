"""Caption data for adapter training: streamed sources and the sharded encoded-caption cache.

Sources are read one caption at a time, never all at once: a text file (one caption per
line), CC3M's TSV (caption<TAB>url), a CSV column or a Parquet column (pyarrow
`iter_batches`), or a folder of such files (sorted by name). The validation split is
chosen by a hash of the caption text, so it does not depend on the file order, on
sharding or on the number of processes.

The cache (`CaptionCache`) holds the raw encoder states of every training caption in
safetensors shards of `shard_rows` rows:

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

import csv
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from .atomic import atomic_path, save_safetensors
from .backend import TextEncoderBackend

CACHE_FORMAT = "drum-caption-cache"
CACHE_VERSION = 1
CAPTION_COLUMNS = ("caption", "text", "txt", "prompt")  # tried in order when no column is named
FORMATS = ("text", "tsv", "csv", "parquet")
_SUFFIXES = {".txt": "text", ".tsv": "tsv", ".csv": "csv", ".parquet": "parquet"}
T = TypeVar("T")


class CaptionSourceError(ValueError):
    """A caption file that cannot be read as asked."""


# ---------------------------------------------------------------------------------- sources
def held_out(caption: str, fraction: float) -> bool:
    """Whether `caption` belongs to the validation split (a hash of its text, not its position)."""
    if fraction <= 0:
        return False
    value = int.from_bytes(hashlib.blake2b(caption.encode("utf-8"), digest_size=8).digest(), "big")
    return value < fraction * 2**64


def _format_of(path: str, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise CaptionSourceError(f"{path}: unknown caption format {fmt!r}; one of auto, {', '.join(FORMATS)}")
        return fmt
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _SUFFIXES:
        raise CaptionSourceError(f"{path}: cannot tell the caption format from '{suffix}'; pass --format ({', '.join(FORMATS)})")
    return _SUFFIXES[suffix]


def _pick_column(path: str, names: Sequence[str], column: str | None) -> str:
    if column is not None:
        if column not in names:
            raise CaptionSourceError(f"{path}: no column {column!r}; columns are {list(names)}")
        return column
    for name in CAPTION_COLUMNS:
        if name in names:
            return name
    raise CaptionSourceError(f"{path}: no caption column among {list(names)}; name one with --column")


def _text_lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for line in f:
            yield line.rstrip("\r\n")


def _tsv_captions(path: str, column: str | None) -> Iterator[str]:
    """CC3M style: caption<TAB>url, no header; a named column needs a header row."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        if column is None:
            for line in f:
                yield line.rstrip("\r\n").split("\t", 1)[0]
            return
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, [])
        index = header.index(_pick_column(path, header, column))
        for row in reader:
            yield row[index] if index < len(row) else ""


def _csv_captions(path: str, column: str | None) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        index = header.index(_pick_column(path, header, column))
        for line, row in enumerate(reader, start=2):
            if index >= len(row):
                raise CaptionSourceError(f"{path}:{line}: row has {len(row)} fields, the caption column is field {index + 1}")
            yield row[index]


def _parquet_captions(path: str, column: str | None, batch_rows: int = 8192) -> Iterator[str]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    name = _pick_column(path, parquet.schema_arrow.names, column)
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[name]):
        for value in batch.column(0).to_pylist():
            yield value if isinstance(value, str) else ""


@dataclass(frozen=True)
class CaptionSource:
    """Captions streamed from files; empty captions are skipped.

    `paths`: files or folders (a folder contributes its files of a known suffix, sorted).
    `fmt`: "auto" (by suffix), "text", "tsv", "csv" or "parquet". `column`: the CSV/Parquet
    column (default the first of caption, text, txt, prompt); for TSV, a header name.
    """

    paths: tuple[str, ...]
    fmt: str = "auto"
    column: str | None = None

    @classmethod
    def of(cls, paths: str | os.PathLike | Sequence[str | os.PathLike], fmt: str = "auto", column: str | None = None) -> CaptionSource:
        items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        return cls(tuple(os.fspath(p) for p in items), fmt, column)

    def files(self) -> list[str]:
        found = []
        for path in self.paths:
            if os.path.isdir(path):
                inside = sorted(os.path.join(path, n) for n in os.listdir(path))
                found += [p for p in inside if os.path.isfile(p) and (self.fmt != "auto" or os.path.splitext(p)[1].lower() in _SUFFIXES)]
            elif os.path.isfile(path):
                found.append(path)
            else:
                raise FileNotFoundError(f"caption source not found: {path}")
        if not found:
            raise CaptionSourceError(f"no caption files in {', '.join(self.paths)}")
        return found

    def __iter__(self) -> Iterator[str]:
        for path in self.files():
            fmt = _format_of(path, self.fmt)
            if fmt == "text":
                rows = _text_lines(path)
            elif fmt == "tsv":
                rows = _tsv_captions(path, self.column)
            elif fmt == "csv":
                rows = _csv_captions(path, self.column)
            else:
                rows = _parquet_captions(path, self.column)
            for caption in rows:
                caption = caption.strip()
                if caption:
                    yield caption

    def describe(self) -> dict:
        """What identifies this source (paths, sizes, modification times), for cache checks."""
        return {
            "files": [{"path": os.path.abspath(p), "bytes": os.path.getsize(p), "mtime": int(os.path.getmtime(p))} for p in self.files()],
            "format": self.fmt,
            "column": self.column,
        }


@dataclass(frozen=True)
class CaptionSplit:
    """A source split into training and held-out captions by hash.

    The first `validation_size` held-out captions (in file order) are the validation set;
    further held-out captions are used by neither split.
    """

    source: CaptionSource
    validation_fraction: float = 0.001
    validation_size: int = 2048

    def train(self) -> Iterator[str]:
        return (c for c in self.source if not held_out(c, self.validation_fraction))

    def validation(self) -> list[str]:
        captions = []
        if self.validation_size <= 0:
            return captions
        for caption in self.source:
            if held_out(caption, self.validation_fraction):
                captions.append(caption)
                if len(captions) == self.validation_size:
                    break
        return captions

    def train_count(self) -> int:
        return sum(1 for _ in self.train())


def shuffled(items: Iterable[T], buffer_size: int, generator: torch.Generator) -> Iterator[T]:
    """Stream `items` in a random order drawn from a buffer of `buffer_size` (a seeded generator)."""
    buffer: list[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        j = int(torch.randint(buffer_size, (1,), generator=generator))
        yield buffer[j]
        buffer[j] = item
    for j in torch.randperm(len(buffer), generator=generator).tolist():
        yield buffer[j]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items; the last may be shorter."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------- encoding
def caption_targets(backend: TextEncoderBackend, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the adapter reconstructs: raw last-layer states [N, T, E] and (CLIP) the raw EOS state [N, E].

    Backends with `token_ids` / `eos_positions` (HFClipBackend) pick the EOS state from the
    same encoder pass; others are asked for `raw_pooled(prompts)`.
    """
    captions = list(captions)
    with torch.no_grad():
        states = backend.hidden_states(captions, -1).float().clone()  # clone: no inference tensors in autograd
        if backend.kind == "t5":
            return states, None
        if hasattr(backend, "eos_positions") and hasattr(backend, "token_ids"):
            positions = backend.eos_positions(backend.token_ids(captions)).to(states.device)
            return states, states[torch.arange(states.shape[0], device=states.device), positions]
        if not hasattr(backend, "raw_pooled"):
            raise TypeError(f"{type(backend).__name__} has neither eos_positions nor raw_pooled: CLIP training needs the raw EOS state")
        return states, backend.raw_pooled(captions).float().clone()


# ---------------------------------------------------------------------------------- the cache
class CaptionCacheError(ValueError):
    """A caption cache that is incomplete, foreign to this encoder or damaged."""


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    if dtype not in _DTYPES:
        raise ValueError(f"cache dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
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
    storage = _DTYPES[dtype]

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
        raise CaptionSourceError(f"{', '.join(split.source.paths)}: no training captions")
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
