"""Likes and dislikes the user clicked on output images: one JSON ratings file, owned by a `Ratings` store.

    LIKE_RATING, DISLIKE_RATING   5.0 and 1.0: History Split's default threshold 3 puts likes and dislikes apart
    rating_value(word)            "like" -> 5.0, "dislike" -> 1.0, "clear" -> None (RatingsError otherwise)
    Ratings(path)                 the store of one file (missing file = no ratings yet); its methods:
      .rate(kind, key, rating, prompts=(), when=None)   record / replace / (rating None) remove one image's rating
      .get(kind, key)             the image's RatedImage or None
      .records()                  every RatedImage, oldest rating first
      .ratings(kind="output")     {image key: rating} of one folder kind
    load_ratings(path, kind="output")   the same mapping straight from a file: what scan_images(ratings=...) takes
    ratings_stamp(path)           (inode, size, mtime_ns) of the file, or None: changes whenever a rating does

An image is named by its folder kind ("output" or "temp": ComfyUI's folder types) and its key, the path relative to
that folder with "/" separators ("portraits/ComfyUI_00001_.png"): the key form of drum_core.image_history's scanner
with root = the output folder. Keys are relative, without "." or ".." parts, NUL or backslashes (RatingsError).

The file (format "drum-ratings", version 1; docs/ratings.md):
    {"format": "drum-ratings", "version": 1,
     "ratings": [{"kind": "output", "image": "<key>", "rating": 5.0, "prompts": ["..."], "time": <epoch s>}, ...]}
`prompts` are the image's positive prompts when it was rated (as its metadata gave them; may be empty).

Every change is one read-modify-write of the file under an exclusive lock on "<file>.lock" (threads and processes
both), written atomically (drum_core.atomic): concurrent clicks never lose each other's ratings, a crash never
leaves half a file. Re-rating an image replaces its record, clearing removes it.

Bounds: at most MAX_RECORDS rated images and MAX_FILE_BYTES of file (a new image past either raises RatingsFull;
clearing always works), MAX_PROMPT_CHARS characters of prompt text per image (longer text is cut,
with "…"). A file that is not valid JSON, not this format, or past MAX_FILE_BYTES raises RatingsError naming the file
(and line): it is never read as empty nor rewritten.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_path

LIKE_RATING = 5.0
DISLIKE_RATING = 1.0
RATING_WORDS: dict[str, float | None] = {"like": LIKE_RATING, "dislike": DISLIKE_RATING, "clear": None}
KINDS = ("output", "temp")
FORMAT = "drum-ratings"
VERSION = 1
MAX_RECORDS = 10_000
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_PROMPT_CHARS = 4_000
MAX_KEY_CHARS = 1_024


class RatingsError(ValueError):
    """A ratings file or a rating request that cannot be used; the message names the file (and line) or the value."""


class RatingsFull(RatingsError):
    """A new image's rating would pass the store's bound (MAX_RECORDS images or MAX_FILE_BYTES)."""


@dataclass(frozen=True)
class RatedImage:
    kind: str  # "output" | "temp"
    key: str  # path relative to that folder, "/"-separated
    rating: float
    prompts: tuple[str, ...]
    time: float  # when it was rated, seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "image": self.key, "rating": self.rating, "prompts": list(self.prompts), "time": self.time}


def rating_value(word: Any) -> float | None:
    """The rating a page word stands for: "like" -> LIKE_RATING, "dislike" -> DISLIKE_RATING, "clear" -> None."""
    if not isinstance(word, str) or word not in RATING_WORDS:
        raise RatingsError(f"rating must be one of {', '.join(RATING_WORDS)}, not {word!r}"[:200])
    return RATING_WORDS[word]


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise RatingsError(f"image type must be one of {', '.join(KINDS)}, not {kind!r}"[:200])
    return kind


def check_key(key: Any) -> str:
    """An image key as stored: relative, "/"-separated, no empty / "." / ".." parts, no NUL or backslash."""
    if not isinstance(key, str) or not key:
        raise RatingsError("image key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise RatingsError(f"image key longer than {MAX_KEY_CHARS} characters")
    if "\x00" in key or "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise RatingsError(f"image key {key[:200]!r} is not a relative '/'-separated path inside its folder")
    return key


def _prompts(prompts: Iterable[str]) -> tuple[str, ...]:
    """The prompts kept with a rating: strings, at most MAX_PROMPT_CHARS characters in all (the rest cut, "…")."""
    kept: list[str] = []
    room = MAX_PROMPT_CHARS
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise RatingsError(f"prompts must be strings, not {type(prompt).__name__}")
        if room <= 0:
            break
        if len(prompt) > room:
            prompt = prompt[: max(room - 1, 0)] + "…"
        kept.append(prompt)
        room -= len(prompt)
    return tuple(kept)


def _record(item: Any, where: str) -> RatedImage:
    if not isinstance(item, dict):
        raise RatingsError(f"{where}: a rating must be an object")
    try:
        kind = check_kind(item.get("kind"))
        key = check_key(item.get("image"))
    except RatingsError as error:
        raise RatingsError(f"{where}: {error}") from None
    rating, when, prompts = item.get("rating"), item.get("time"), item.get("prompts", [])
    if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating) or rating < 0:
        raise RatingsError(f"{where}: rating must be a finite number >= 0, not {rating!r}"[:200])
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        raise RatingsError(f"{where}: time must be a number of seconds, not {when!r}"[:200])
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise RatingsError(f"{where}: prompts must be a list of strings")
    return RatedImage(kind, key, float(rating), tuple(prompts), float(when))


def _item_line(text: str, index: int) -> int:
    """The line where the index-th item of the "ratings" list starts (1 when it cannot be told)."""
    start = text.find('"ratings"')
    if start < 0:
        return 1
    decoder, position = json.JSONDecoder(), text.find("[", start) + 1
    for i in range(index + 1):
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if i == index:
            return text.count("\n", 0, position) + 1
        try:
            _, position = decoder.raw_decode(text, position)
        except ValueError:
            return 1
    return 1


def parse_ratings(text: str, source: str = "<ratings>") -> list[RatedImage]:
    """The records of a ratings file's text; RatingsError "<source> line <n>: <problem>" when it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise RatingsError(f"{source} line {error.lineno}: not valid JSON ({error.msg}); fix or remove the file") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("ratings"), list):
        raise RatingsError(f'{source}: not a DrUM ratings file (an object with "format": "{FORMAT}" and a "ratings" list expected)')
    if data.get("version") != VERSION:
        raise RatingsError(
            f"{source}: ratings file version {data.get('version')!r} is not {VERSION} (written by another DrUM version?)"[:300]
        )
    records = [_record(item, f"{source} line {_item_line(text, i)}") for i, item in enumerate(data["ratings"])]
    seen: set[tuple[str, str]] = set()
    for i, record in enumerate(records):
        if (record.kind, record.key) in seen:
            raise RatingsError(f"{source} line {_item_line(text, i)}: image {record.kind}/{record.key} rated twice")
        seen.add((record.kind, record.key))
    return records


def _serialize(records: Sequence[RatedImage]) -> bytes:
    """The file's text: one rated image a line (readable, and a JSON error's line names the record)."""
    items = "".join(f"\n  {json.dumps(r.to_json(), ensure_ascii=False)}," for r in records).rstrip(",")
    return f'{{"format": "{FORMAT}", "version": {VERSION}, "ratings": [{items}\n]}}\n'.encode()


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) held for the block: excludes other threads and processes."""
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - Windows
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read(path: Path, max_bytes: int = MAX_FILE_BYTES) -> list[RatedImage]:
    """The file's records ([] when it does not exist); RatingsError when it cannot be used."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return []
    if size > max_bytes:
        raise RatingsError(f"{path}: ratings file of {size} bytes is larger than the {max_bytes} bytes a DrUM ratings file may be")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise RatingsError(f"{path}: cannot read the ratings file ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RatingsError(f"{path}: ratings file is not UTF-8 text; fix or remove the file") from None
    return parse_ratings(text, str(path))


class Ratings:
    """The owner of one ratings file. Holds no copy of it: every call reads the file (under the lock for changes),
    so several stores, threads and processes on one file stay consistent."""

    def __init__(self, path: str | os.PathLike, *, max_records: int = MAX_RECORDS, max_bytes: int = MAX_FILE_BYTES):
        self.path = Path(path)
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # one change at a time within this store (the file lock covers the rest)

    def __repr__(self) -> str:
        return f"Ratings({str(self.path)!r})"

    def records(self) -> list[RatedImage]:
        """Every rated image, oldest rating first."""
        return sorted(_read(self.path, self.max_bytes), key=lambda r: r.time)

    def get(self, kind: str, key: str) -> RatedImage | None:
        kind, key = check_kind(kind), check_key(key)
        return next((r for r in _read(self.path, self.max_bytes) if r.kind == kind and r.key == key), None)

    def ratings(self, kind: str = "output") -> dict[str, float]:
        """{image key: rating} of one folder kind."""
        kind = check_kind(kind)
        return {r.key: r.rating for r in _read(self.path, self.max_bytes) if r.kind == kind}

    def rate(self, kind: str, key: str, rating: float | None, prompts: Iterable[str] = (), when: float | None = None) -> RatedImage | None:
        """Record `rating` for the image (replacing its earlier one); None removes it. Returns the stored record
        (None when cleared). RatingsFull when a new image would pass the bounds; the file is then unchanged."""
        kind, key = check_kind(kind), check_key(key)
        if rating is not None and (
            isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating) or rating < 0
        ):
            raise RatingsError(f"rating must be a finite number >= 0, not {rating!r}"[:200])
        record = (
            None
            if rating is None
            else RatedImage(kind, key, float(rating), _prompts(prompts), time.time() if when is None else float(when))
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, _file_lock(f"{self.path}.lock"):
            records = _read(self.path, self.max_bytes)
            kept = [r for r in records if (r.kind, r.key) != (kind, key)]
            if record is None:
                if len(kept) == len(records):
                    return None  # nothing to clear: the file stays as it is
            else:
                if len(kept) == len(records) and len(kept) >= self.max_records:
                    raise RatingsFull(f"{self.path}: already {len(kept)} rated images, the most a ratings file keeps; clear some first")
                kept.append(record)
            data = _serialize(kept)
            if record is not None and len(data) > self.max_bytes:
                raise RatingsFull(f"{self.path}: this rating would make the file larger than {self.max_bytes} bytes; clear some first")
            with atomic_path(self.path) as temporary, open(temporary, "wb") as f:
                f.write(data)
        return record


def load_ratings(path: str | os.PathLike, kind: str = "output") -> dict[str, float]:
    """{image key: rating} of one folder kind from a ratings file ({} when the file does not exist)."""
    return Ratings(path).ratings(kind)


def ratings_stamp(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of a ratings file, None when missing: a cheap value that changes with every rating
    (each write replaces the file, so the inode changes even within one clock tick)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)
