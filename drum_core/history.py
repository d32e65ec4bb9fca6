"""A user's prompt history (docs/method.md §3-4): prompts, preference intensities p_i, timestamps.

    load_history(path)         by extension:
      .txt                     one prompt a line, blank lines skipped; "prompt<TAB>rating" adds a rating
      .csv / .tsv              header row; prompt column: prompt|text|caption|query|title|description,
                               optional rating column: rating|weight|score|intensity|preference,
                               optional time column: timestamp|time|created_at|date (names case-insensitive)
      .json                    ["prompt", ...] or [{"prompt": ..., "rating": ...}, ...] (same field names),
                               or {"prompts": [...]} / {"history": [...]}
      .jsonl                   one string or object a line; PIP per-user files are detected by their
                               `train_samples:` / `test_samples:` marker lines (is_test marks test records)
    parse_history_text(text)   the pasted form of the ComfyUI node: the .txt rules
    recency_intensities(h, days)  p_i * 0.5 ** (age_i / days), age before the newest timestamp
    split_history(h, t)        (likes: rating >= t, p = rating; dislikes: rating < t, p = t - rating;
                               unrated records in neither)
    mix_histories(a, b, t)     both sides scaled to one total, weighted 1 - t and t

Ratings become intensities p_i: finite and >= 0; an unrated record has intensity 1.0 and rating None
(History.ratings keeps what the user rated apart from the intensities). Timestamps are seconds
since the epoch, given as numbers or ISO-8601 text (no zone = UTC); a file gives every record a
timestamp or none (some but not all is an error). Every malformed input raises HistoryError
"<file> line <n>: <problem>".
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import operator
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .intensities import is_intensity

PROMPT_FIELDS = ("prompt", "text", "caption", "query", "title", "description")
RATING_FIELDS = ("rating", "weight", "score", "intensity", "preference")
TIME_FIELDS = ("timestamp", "time", "created_at", "date")
JSON_LIST_KEYS = ("prompts", "history")
PIP_MARKERS = {"train_samples:": False, "test_samples:": True}  # marker -> records after it are test records
TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
HISTORY_EXTENSIONS = (".txt", ".csv", ".tsv", ".json", ".jsonl")  # the history file formats: core, node, page, CLI


class HistoryError(ValueError):
    """A history file or text that cannot be read; the message names the file, line and problem."""


class _Invalid(Exception):
    """A bad value; the caller adds where it was found."""


@dataclass(frozen=True, init=False)
class History:
    """Prompts with aligned preference intensities p_i, and optional ratings, timestamps and PIP test flags.

    Immutable: every field is a tuple (the constructor accepts any sequence). intensities=None at
    construction means every prompt has intensity 1.0; the stored `intensities` is never None.
    `ratings` are what the user said (None = unrated), kept apart from the intensities that a
    recency decay or a split may change: a file's rating column sets both. `ratings` is None when
    the source carries no rating at all.
    """

    prompts: tuple[str, ...]
    intensities: tuple[float, ...]
    timestamps: tuple[float | None, ...] | None
    source: str
    is_test: tuple[bool, ...] | None
    ratings: tuple[float | None, ...] | None

    def __init__(
        self,
        prompts: Sequence[str],
        intensities: Sequence[float] | None = None,
        timestamps: Sequence[float | None] | None = None,
        source: str = "<memory>",
        is_test: Sequence[bool] | None = None,
        ratings: Sequence[float | None] | None = None,
    ) -> None:
        prompts = tuple(prompts)
        values = {
            "prompts": prompts,
            "intensities": (1.0,) * len(prompts) if intensities is None else tuple(float(w) for w in intensities),
            "timestamps": None if timestamps is None else tuple(timestamps),
            "source": source,
            "is_test": None if is_test is None else tuple(bool(t) for t in is_test),
            "ratings": None if ratings is None else tuple(None if r is None else float(r) for r in ratings),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        for name in ("intensities", "timestamps", "is_test", "ratings"):
            value = values[name]
            if value is not None and len(value) != len(prompts):
                raise HistoryError(f"{source}: {len(value)} {name} for {len(prompts)} prompts")
        bad = next((i for i, w in enumerate(self.intensities) if not is_intensity(w)), None)
        if bad is not None:
            raise HistoryError(f"{source}: intensity {self.intensities[bad]} of prompt {bad} must be finite and >= 0")
        bad = next((i for i, r in enumerate(self.ratings or ()) if r is not None and not is_intensity(r)), None)
        if bad is not None:
            raise HistoryError(f"{source}: rating {self.ratings[bad]} of prompt {bad} must be finite and >= 0")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, indices: Iterable[int]) -> History:
        """The records at `indices` (ints or an integer tensor, e.g. coreset picks), in that order."""
        picks = [operator.index(i) for i in indices]

        def pick(values):
            return None if values is None else [values[i] for i in picks]

        return History(
            pick(self.prompts), pick(self.intensities), pick(self.timestamps), self.source, pick(self.is_test), pick(self.ratings)
        )

    def most_recent(self, n: int) -> list[int]:
        """Indices of the n most recent records, newest first: by timestamp (ties: later in the file), else file order."""
        if n < 0:
            raise ValueError(f"most_recent needs n >= 0, got {n}")
        times = self.timestamps
        order = range(len(self)) if times is None else sorted(range(len(self)), key=lambda i: (times[i] is not None, times[i] or 0.0, i))
        return list(reversed(order))[:n]

    def with_intensities(self, intensities: Sequence[float]) -> History:
        """The same records (ratings kept) with other intensities (one per prompt)."""
        return replace(self, intensities=intensities)

    def renamed(self, source: str) -> History:
        """The same records under another source name."""
        return replace(self, source=source)


SECONDS_PER_DAY = 86_400.0


def recency_intensities(history: History, half_life_days: float) -> list[float]:
    """Intensities decayed by age: p_i * 0.5 ** (age_i / half_life_days), one per prompt.

    age_i = (newest timestamp of the history - t_i) in days, so the newest prompt keeps p_i and
    one a half-life older counts half. half_life_days = 0 turns the decay off; a history without
    timestamps, and any record whose timestamp is None, keeps p_i. (The file loaders keep
    timestamps only when every record has one and reject files where only some have one.)
    """
    if not (math.isfinite(half_life_days) and half_life_days >= 0):
        raise ValueError(f"half_life_days must be a finite number >= 0 (0 = no decay), got {half_life_days}")
    times = history.timestamps
    known = [] if times is None or half_life_days == 0 else [t for t in times if t is not None]
    if not known:
        return list(history.intensities)
    newest = max(known)
    return [p if t is None else p * 0.5 ** ((newest - t) / SECONDS_PER_DAY / half_life_days) for p, t in zip(history.intensities, times)]


def split_history(history: History, threshold: float) -> tuple[History, History]:
    """(likes, dislikes) of a rated history, each in history order with timestamps and ratings kept.

    likes: rating >= threshold, intensity = the rating itself.
    dislikes: rating < threshold, intensity = threshold - rating, so the most disliked weigh most.
    Records without a rating (rating None, or a history without ratings) go to neither side: an
    unrated prompt says nothing about liking or disliking it.
    """
    if not math.isfinite(threshold):
        raise ValueError(f"split threshold must be a finite number, got {threshold}")
    ratings = history.ratings or (None,) * len(history)
    liked = [i for i, rating in enumerate(ratings) if rating is not None and rating >= threshold]
    disliked = [i for i, rating in enumerate(ratings) if rating is not None and rating < threshold]
    likes = (
        history.subset(liked).with_intensities([ratings[i] for i in liked]).renamed(f"{history.source} (likes: rating >= {threshold:g})")
    )
    dislikes = history.subset(disliked).with_intensities([threshold - ratings[i] for i in disliked])
    return likes, dislikes.renamed(f"{history.source} (dislikes: rating < {threshold:g})")


def mix_histories(a: History, b: History, t: float) -> History:
    """One history moving from taste `a` (t = 0) to taste `b` (t = 1).

    Each side is scaled to the common total S = (1 - t) * total_a + t * total_b, then weighted
    (1 - t) and t: w_a,i = (1 - t) * p_a,i * S / total_a and w_b,i = t * p_b,i * S / total_b, so
    side a holds the share 1 - t of the intensity whatever the sides' sizes and rating scales.
    t = 0 returns `a` itself and t = 1 returns `b` (a side of share 0 adds no prompts; PeCA is
    then exactly as with that history alone). A prompt of `b` that is also in `a` is not repeated:
    its weight adds to the first such prompt of `a` (PeCA sums identical references' intensities, so
    this is exact). A side with no prompts, or intensities summing to 0, contributes no intensity;
    S is then the other side's total. Timestamps are kept when both sides have them (a merged
    prompt keeps the newer one). The mix carries no ratings: its intensities are blends, not what
    the user rated.
    """
    if not (math.isfinite(t) and 0 <= t <= 1):
        raise ValueError(f"mix must lie in [0, 1], got {t}")
    if t == 0:
        return a
    if t == 1:
        return b
    sides = [(a, 1 - t, math.fsum(a.intensities)), (b, t, math.fsum(b.intensities))]
    weighted = [(share, total) for _, share, total in sides if total > 0]
    common = sum(share * total for share, total in weighted) / sum(share for share, _ in weighted) if weighted else 0.0
    keep_times = a.timestamps is not None and b.timestamps is not None
    prompts: list[str] = []
    intensities: list[float] = []
    timestamps: list[float] = []
    first_in_a: dict[str, int] = {}
    for side, (history, share, total) in enumerate(sides):
        scale = share * common / total if total > 0 else 0.0
        for i, (prompt, p) in enumerate(zip(history.prompts, history.intensities)):
            at = first_in_a.get(prompt) if side == 1 else None
            if at is None:
                if side == 0:
                    first_in_a.setdefault(prompt, len(prompts))
                prompts.append(prompt)
                intensities.append(p * scale)
                if keep_times:
                    timestamps.append(history.timestamps[i])
            else:
                intensities[at] += p * scale
                if keep_times:
                    timestamps[at] = max(timestamps[at], history.timestamps[i])
    return History(prompts, intensities, timestamps if keep_times else None, f"mix of {a.source} and {b.source} (t = {t:g})")


def _prompt(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{field} must be a string, got {type(value).__name__} {value!r:.80}")
    text = value.strip()
    if not text:
        raise _Invalid(f"empty {field}")
    return text


def _scalar(value: Any, what: str) -> Any:
    """None for a missing value, else the stripped string or the number as a float."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _Invalid(f"{what} {value:.3g} is too large") from None
    raise _Invalid(f"{what} must be a number, got {type(value).__name__} {value!r:.80}")


def _rating(value: Any) -> float | None:
    """The rating as a float, None when the value is missing."""
    value = _scalar(value, "rating")
    if value is None:
        return None
    try:
        rating = float(value)
    except ValueError:
        raise _Invalid(f"rating {value!r} is not a number") from None
    if not is_intensity(rating):
        raise _Invalid(f"rating {value!r} must be a finite number >= 0")
    return rating


def _timestamp(value: Any) -> float | None:
    value = _scalar(value, "timestamp")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        iso = value[:-1] + "+00:00" if value[-1] in "Zz" else value  # Python 3.10 does not read "Z"
        try:
            moment = datetime.fromisoformat(iso)
        except ValueError:
            raise _Invalid(f"timestamp {value!r} is neither a number nor an ISO-8601 date") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(seconds):
        raise _Invalid(f"timestamp {value!r} must be finite")
    return seconds


def _first(names: Sequence[str], available: Container[str]) -> str | None:
    return next((name for name in names if name in available), None)


class _Records:
    """Collects validated records; `locate(where)` turns a record position into "line N" text."""

    def __init__(self, source: str, locate: Callable[[int], str] = lambda line: f"line {line}") -> None:
        self.source = source
        self.locate = locate
        self.prompts: list[str] = []
        self.ratings: list[float | None] = []
        self.timestamps: list[float | None] = []
        self.positions: list[int] = []
        self.is_test: list[bool] | None = None
        self.in_test_section = False

    def error(self, where: int, problem: str) -> HistoryError:
        return HistoryError(f"{self.source} {self.locate(where)}: {problem}")

    def section(self, marker: str) -> None:
        """A PIP marker line: from now on records are train or test records."""
        if self.is_test is None:
            self.is_test = [False] * len(self.prompts)
        self.in_test_section = PIP_MARKERS[marker]

    def add(self, where: int, prompt: Any, rating: Any = None, timestamp: Any = None, field: str = "prompt") -> None:
        try:
            record = _prompt(prompt, field), _rating(rating), _timestamp(timestamp)
        except _Invalid as problem:
            raise self.error(where, str(problem)) from None
        self.prompts.append(record[0])
        self.ratings.append(record[1])
        self.timestamps.append(record[2])
        self.positions.append(where)
        if self.is_test is not None:
            self.is_test.append(self.in_test_section)

    def add_item(self, where: int, item: Any) -> None:
        """A JSON value: a prompt string or an object with prompt / rating / time fields."""
        if isinstance(item, str):
            self.add(where, item)
            return
        if not isinstance(item, dict):
            raise self.error(where, f"expected a prompt string or an object, got {type(item).__name__} {item!r:.80}")
        fields = {key.lower(): value for key, value in item.items()}
        prompt_field = _first(PROMPT_FIELDS, fields)
        if prompt_field is None:
            raise self.error(where, f"object has no prompt field (keys found: {sorted(item)}; expected one of {', '.join(PROMPT_FIELDS)})")
        rating_field, time_field = _first(RATING_FIELDS, fields), _first(TIME_FIELDS, fields)
        self.add(where, fields[prompt_field], fields.get(rating_field), fields.get(time_field), field=f"'{prompt_field}'")

    def finish(self, end: int) -> History:
        """The History; `end` is the position blamed when there is no prompt at all."""
        if not self.prompts:
            raise self.error(end, "no prompts found (the file is empty, or holds only blank lines or markers)")
        missing = [i for i, t in enumerate(self.timestamps) if t is None]
        if missing and len(missing) < len(self.timestamps):
            raise self.error(
                self.positions[missing[0]], "record has no timestamp while others have one; give every record a timestamp or none"
            )
        timestamps = None if missing else self.timestamps
        intensities = [1.0 if rating is None else rating for rating in self.ratings]
        ratings = self.ratings if any(rating is not None for rating in self.ratings) else None
        return History(self.prompts, intensities, timestamps, self.source, self.is_test, ratings)


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_history_text(text: str, source: str = "<text>") -> History:
    """One prompt a line; blank lines are skipped; a rating may follow the prompt after a TAB.

    "a red fox in snow<TAB>4.5" -> prompt "a red fox in snow", intensity 4.5. Copying two columns
    (prompt, rating) from a spreadsheet produces exactly this form.
    """
    records = _Records(source)
    lines = _lines(text)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        prompt, _, rating = line.rpartition("\t") if "\t" in line else (line, "", "")
        try:
            rated = _rating(rating)
        except _Invalid as problem:
            raise records.error(number, f"{problem} (text after the last TAB is read as the rating)") from None
        records.add(number, prompt, rated)
    return records.finish(max(1, len(lines) - (lines[-1] == "")))


def not_utf8(path: str | Path) -> str | None:
    """The one rule for text files a user gives (histories, training captions): UTF-8, a byte-order mark
    accepted. None when `path` keeps it, else the problem as `<file> line <n>: byte 0x.. at column <c> is not
    UTF-8; save the file as UTF-8` for its first offending byte. Read line by line: any size."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            skip = 3 if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                raw[skip:].decode("utf-8")
            except UnicodeDecodeError as error:
                start = skip + error.start
                return f"{path} line {number}: byte 0x{raw[start]:02x} at column {start + 1} is not UTF-8; save the file as UTF-8"
    return None


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, with or without a byte-order mark (`not_utf8`)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HistoryError(not_utf8(path) or f"{path}: not UTF-8; save the file as UTF-8") from None


def _csv_rows(text: str, source: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) of every row that has a non-empty cell.

    The reader is lenient (a stray quote inside a cell is kept), but a quote that opens a cell and is never
    closed would make the rest of the file one cell: the last row is checked for that before it is given out."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    line, held = 1, None
    try:
        for row in reader:
            if any(row):
                if held is not None:
                    yield held
                held = (line, row)
            line = reader.line_num + 1
    except csv.Error as error:
        raise HistoryError(f"{source} line {reader.line_num}: unreadable row: {error}") from None
    if held is not None:
        _check_closed_quotes(text, held[0], source, delimiter)
        yield held


def _check_closed_quotes(text: str, line: int, source: str, delimiter: str) -> None:
    """HistoryError naming `line` when the row starting there ends inside a quoted cell at the end of the file."""
    start = 0
    for _ in range(line - 1):
        start = text.find("\n", start) + 1
        if start == 0:
            return  # line counting by '\r' alone: nothing to check against
    try:
        for _ in csv.reader(io.StringIO(text[start:], newline=""), delimiter=delimiter, strict=True):
            pass
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            raise HistoryError(
                f'{source} line {line}: a quote (") opens a cell here and is never closed, so the rest of the file would be '
                'one cell; close it, or write a quote inside a quoted cell as two ("")'
            ) from None


def _header(rows: Iterator[tuple[int, list[str]]], source: str) -> tuple[int, list[str]]:
    """The header row's line and its lowercased column names."""
    first = next(rows, None)
    if first is None:
        raise HistoryError(f"{source} line 1: no prompts found (the file is empty)")
    return first[0], [name.strip().lower() for name in first[1]]


def _cell(records: _Records, line: int, row: list[str], column: int | None, names: list[str]) -> str | None:
    if column is None:
        return None
    if column >= len(row):
        raise records.error(line, f"row has {len(row)} fields, so no '{names[column]}' (column {column + 1})")
    return row[column]


def _load_table(text: str, source: str, delimiter: str) -> History:
    rows = _csv_rows(text, source, delimiter)
    header_line, names = _header(rows, source)
    prompt_name = _first(PROMPT_FIELDS, names)
    if prompt_name is None:
        hint = " (the file looks ';'-separated; use ',')" if delimiter == "," and any(";" in name for name in names) else ""
        raise HistoryError(
            f"{source} line {header_line}: no prompt column; columns found: {names}; name one of {', '.join(PROMPT_FIELDS)}{hint}"
        )
    columns = [names.index(name) if name else None for name in (prompt_name, _first(RATING_FIELDS, names), _first(TIME_FIELDS, names))]
    records = _Records(source)
    line = header_line
    for line, row in rows:
        prompt, rating, timestamp = (_cell(records, line, row, column, names) for column in columns)
        records.add(line, prompt, rating, timestamp, field=f"'{prompt_name}'")
    return records.finish(line)


def _load_jsonl(text: str, source: str) -> History:
    """One JSON string or object a line; PIP marker lines switch between train and test records."""
    records = _Records(source)
    lines = _lines(text)
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        marker = line[1:-1] if len(line) > 1 and line[0] == line[-1] == '"' else line
        if marker in PIP_MARKERS:
            records.section(marker)
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise records.error(number, f"broken JSON at column {error.colno}: {error.msg}") from None
        records.add_item(number, item)
    return records.finish(max(1, len(lines) - (lines[-1] == "")))


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _json_item_line(text: str, key: str | None, index: int) -> int:
    """1-based line where item `index` of the top-level list (or of text's object[key]) starts; text is valid JSON."""
    decoder = json.JSONDecoder()

    def skip(pos: int) -> int:
        return _WHITESPACE.match(text, pos).end()

    pos = skip(0)
    if key is not None:  # walk the top-level object's members up to `key`
        pos = skip(pos + 1)
        while True:
            name, pos = decoder.raw_decode(text, pos)
            pos = skip(skip(pos) + 1)  # past ':'
            if name == key:
                break
            pos = skip(skip(decoder.raw_decode(text, pos)[1]) + 1)  # past the value and ','
    pos = skip(pos + 1)  # past '['
    for _ in range(index):
        pos = skip(skip(decoder.raw_decode(text, pos)[1]) + 1)  # past the item and ','
    return text.count("\n", 0, pos) + 1


def _load_json(text: str, source: str) -> History:
    if not text.strip():
        raise HistoryError(f"{source} line 1: no prompts found (the file is empty)")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise HistoryError(f"{source} line {error.lineno}: broken JSON at column {error.colno}: {error.msg}") from None
    key = None
    if isinstance(document, dict):
        key = _first(JSON_LIST_KEYS, document)
        if key is None:
            raise HistoryError(
                f"{source} line 1: expected a list of prompts or an object with a 'prompts' or 'history' list, found keys {sorted(document)}"
            )
        items = document[key]
    else:
        items = document
    if not isinstance(items, list):
        what = f"'{key}'" if key else "the document"
        raise HistoryError(f"{source} line 1: {what} must be a list of prompts or objects, got {type(items).__name__}")
    if not items:
        raise HistoryError(f"{source} line {_json_item_line(text, key, 0)}: no prompts found (the list is empty)")
    records = _Records(source, lambda index: f"line {_json_item_line(text, key, index)} (item {index + 1})")
    for index, item in enumerate(items):
        records.add_item(index, item)
    return records.finish(0)


def load_history(path: str | Path) -> History:
    """A History from a .txt, .csv, .tsv, .json or .jsonl file (see the module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in HISTORY_EXTENSIONS:
        raise HistoryError(f"{path}: unknown history file extension '{path.suffix}' (use {', '.join(HISTORY_EXTENSIONS)})")
    if not path.is_file():
        raise FileNotFoundError(f"history file not found: {path}")
    text, source = _read_text(path), str(path)
    if suffix == ".txt":
        return parse_history_text(text, source)
    if suffix == ".json":
        return _load_json(text, source)
    if suffix == ".jsonl":
        return _load_jsonl(text, source)
    return _load_table(text, source, TABLE_DELIMITERS[suffix])
