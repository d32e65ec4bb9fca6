"""Caption sources for adapter training, streamed one caption at a time, and their validation split.

Sources are read one caption at a time, never all at once: a text file (one caption per
line), CC3M's TSV (caption<TAB>url), a CSV column or a Parquet column (pyarrow
`iter_batches`), or a folder of such files (sorted by name). The validation split is
chosen by a hash of the caption text, so it does not depend on the file order, on
sharding or on the number of processes.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..history import not_utf8

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
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line in f:
            yield line.rstrip("\r\n")


def _tsv_captions(path: str, column: str | None) -> Iterator[str]:
    """CC3M style: caption<TAB>url, no header; a named column needs a header row."""
    with open(path, encoding="utf-8-sig", newline="") as f:
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
    with open(path, encoding="utf-8-sig", newline="") as f:
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
            try:
                for caption in rows:
                    caption = caption.strip()
                    if caption:
                        yield caption
            except UnicodeDecodeError:  # the history files' rule (drum_core.history.not_utf8), found while streaming
                raise CaptionSourceError(not_utf8(path) or f"{path}: not UTF-8; save the file as UTF-8") from None

    def check_text(self, probe_bytes: int = 1 << 16) -> None:
        """CaptionSourceError for a text file (not Parquet) whose first `probe_bytes` are not UTF-8 (a binary file
        given as captions): found before an encoder loads; the rest is checked as it streams."""
        for path in self.files():
            if _format_of(path, self.fmt) == "parquet":
                continue
            with open(path, "rb") as f:
                head = f.read(probe_bytes)
            try:
                codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
            except UnicodeDecodeError:
                raise CaptionSourceError(not_utf8(path) or f"{path}: not UTF-8; save the file as UTF-8") from None

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

    def no_training_captions(self) -> CaptionSourceError:
        """The error for a source that yields no training caption."""
        return CaptionSourceError(f"{', '.join(self.source.paths)}: no training captions (empty, or every caption held out)")


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
