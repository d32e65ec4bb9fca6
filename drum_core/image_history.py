"""A prompt history from the images a user already made (docs/outputs.md).

    prompts_of_graph(graph)     the positive prompt texts of a ComfyUI API graph (the `prompt` metadata)
    read_image_prompts(path)    ImagePrompts: the positive prompts an image's metadata records, its
                                metadata time, or the short reason it gives none
    scan_images(sources, ...)   ImageScan: a History from folders and image files, one record per
                                positive prompt per image, oldest first, with counts of what was skipped
    ScanCache                   (path, size, mtime) -> what read_image_prompts found; a JSON file
    load_any_history(path)      a history file (load_history) or a folder / image (scan_images)

Formats read (metadata only; pixels are never decoded):
    PNG   ComfyUI SaveImage / PreviewImage: text chunk `prompt` (tEXt, zTXt or iTXt); ComfyUI
          SaveAnimatedPNG: `comf` chunk "prompt\\0<json>"; A1111 / Forge / Fooocus: text chunk
          `parameters`; time: the tIME chunk (UTC) when present. Text chunks are read up to the
          image data (where the savers put them), or to the end when none came before it
    WebP  ComfyUI SaveAnimatedWEBP and the V3 WebP saver: EXIF tag 0x0110 "prompt:<json>"
          (other tags 0x010F downwards hold "<key>:<json>"); A1111 / Forge: EXIF UserComment
    JPEG  A1111 / Forge: EXIF UserComment (or a COM segment) holding the `parameters` text
EXIF DateTimeOriginal (else DateTime) gives the time when present (with its OffsetTime, else local time).
Every other image takes its file's modification time. Videos (SaveWEBM, SaveVideo) are not read.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from .atomic import atomic_path
from .history import History, HistoryError, load_history

Progress = Callable[[int, int], None]

IMAGE_EXTENSIONS = (".png", ".webp", ".jpg", ".jpeg")
MAX_TEXT_BYTES = 16 << 20  # a metadata text larger than this is skipped ("too large"); ComfyUI graphs are KBs
MAX_PROMPTS_PER_IMAGE = 64

# Skip reasons (ImageScan.skipped keys): short fixed words.
NO_METADATA = "no metadata"
NOT_AN_IMAGE = "not an image"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
NOT_JSON = "not JSON"
NOT_A_GRAPH = "not a graph"
NO_POSITIVE = "no positive prompt"
TOO_LARGE = "too large"
LINKED = "linked"
SKIP_REASONS = (NO_METADATA, NOT_AN_IMAGE, UNREADABLE, TRUNCATED, NOT_JSON, NOT_A_GRAPH, NO_POSITIVE, TOO_LARGE, LINKED)

# --- ComfyUI graphs -------------------------------------------------------------------------

# Text inputs of text encoders, in the order their texts are joined (the main text first).
TEXT_INPUTS = ("text", "text_g", "clip_g", "t5xxl", "clip_l", "text_l", "llama", "prompt", "user_prompt", "bert", "mt5xl")
# Encoders without a `clip` link in the graph (a dangling one) are still known by class.
TEXT_ENCODERS = frozenset(
    {
        "CLIPTextEncode",
        "CLIPTextEncodeSDXL",
        "CLIPTextEncodeSDXLRefiner",
        "CLIPTextEncodeFlux",
        "CLIPTextEncodeSD3",
        "CLIPTextEncodeHiDream",
        "CLIPTextEncodeHunyuanDiT",
        "CLIPTextEncodeLumina2",
        "CLIPTextEncodePixArtAlpha",
        "CLIPTextEncodeControlnet",
        "TextEncodeQwenImageEdit",
        "TextEncodeQwenImageEditPlus",
        "TextEncodeHunyuanVideo_ImageToVideo",
        "DrUMConditioner",
    }
)
# Where a sampler or guider takes its positive conditioning.
POSITIVE_INPUTS = ("positive",)
GUIDER_POSITIVE_INPUTS = ("positive", "conditioning", "cond1", "cond2")
# Inputs of string nodes that hold (or pass on) the text, in order of preference.
STRING_INPUTS = ("populated_text", "value", "text", "string", "prompt", "positive")


class GraphError(ValueError):
    """A `prompt` metadata value that is not a ComfyUI API graph."""


def _link(value: Any) -> tuple[str, int] | None:
    """(node id, output index) of an API-graph link [id, index], else None."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], int) and not isinstance(value[1], bool):
        if isinstance(value[0], (str, int)) and not isinstance(value[0], bool):
            return str(value[0]), value[1]
    return None


def _inputs(node: Any) -> Mapping[str, Any]:
    inputs = node.get("inputs") if isinstance(node, Mapping) else None
    return inputs if isinstance(inputs, Mapping) else {}


def _class(node: Any) -> str:
    kind = node.get("class_type") if isinstance(node, Mapping) else None
    return kind if isinstance(kind, str) else ""


def _is_conditioning_input(name: str) -> bool:
    return "cond" in name.lower() or name == "positive"


def _node_order(key: str) -> tuple[int, int | str]:
    """Node ids in numeric order ("2" before "10"; subgraph ids like "5:3" by their parts)."""
    parts = key.split(":")
    return (0, tuple(int(p) for p in parts)) if all(p.isdigit() for p in parts) else (1, key)  # type: ignore[return-value]


class _Graph:
    def __init__(self, graph: Mapping[str, Any]) -> None:
        self.nodes = {str(key): node for key, node in graph.items()}

    def text(self, value: Any, seen: set[str]) -> str | None:
        """A text input's string: the value itself, or the string a linked string node passes on."""
        while True:
            if isinstance(value, str):
                return value
            link = _link(value)
            if link is None or link[0] in seen or link[0] not in self.nodes:
                return None
            seen.add(link[0])
            node = self.nodes[link[0]]
            inputs = _inputs(node)
            if _class(node) == "StringConcatenate":
                a, b = (self.text(inputs.get(name), set(seen)) for name in ("string_a", "string_b"))
                delimiter = inputs.get("delimiter", "")
                if a is None or b is None or not isinstance(delimiter, str):
                    return None
                return a + delimiter + b
            value = next((inputs[name] for name in STRING_INPUTS if name in inputs), None)

    def encoder_texts(self, node: Any) -> list[str]:
        inputs = _inputs(node)
        texts: list[str] = []
        for name in TEXT_INPUTS:
            if name in inputs:
                text = self.text(inputs[name], set())
                if text is not None and text.strip() and text.strip() not in texts:
                    texts.append(text.strip())
        return texts

    def is_encoder(self, node: Any) -> bool:
        inputs = _inputs(node)
        return (_class(node) in TEXT_ENCODERS or _link(inputs.get("clip")) is not None) and any(name in inputs for name in TEXT_INPUTS)

    def starts(self) -> Iterator[tuple[str, int]]:
        """Links into samplers' and guiders' positive inputs, nodes in id order."""
        for key in sorted(self.nodes, key=_node_order):
            node = self.nodes[key]
            names = GUIDER_POSITIVE_INPUTS if _class(node).endswith("Guider") else POSITIVE_INPUTS
            for name in names:
                link = _link(_inputs(node).get(name))
                if link is not None:
                    yield link

    def positive_prompts(self) -> list[str]:
        prompts: list[str] = []
        seen: set[tuple[str, int]] = set()
        for start in self.starts():
            stack = [start]
            while stack:
                link = stack.pop()
                if link in seen or link[0] not in self.nodes:
                    continue  # a cycle, or a dangling link
                seen.add(link)
                node = self.nodes[link[0]]
                inputs = _inputs(node)
                if self.is_encoder(node):
                    text = ", ".join(self.encoder_texts(node))
                    if text and text not in prompts:
                        prompts.append(text)
                if "positive" in inputs and "negative" in inputs:  # ControlNetApplyAdvanced, InpaintModelConditioning, ...
                    names = {0: ["positive"], 1: ["negative"]}.get(link[1], [])
                else:
                    names = [name for name in inputs if _is_conditioning_input(name)]
                stack.extend(follow for name in reversed(names) if (follow := _link(inputs.get(name))) is not None)
        return prompts


def prompts_of_graph(graph: Any) -> list[str]:
    """The positive prompt texts of a ComfyUI API graph ({id: {"class_type", "inputs"}}), in graph order.

    From every sampler's `positive` input (and a guider's positive / conditioning / cond1 / cond2,
    so BasicGuider / CFGGuider / DualCFGGuider -> SamplerCustomAdvanced) the conditioning links are
    followed back through any node in between (FluxGuidance, ConditioningSetTimestepRange, Combine,
    Concat, Average, ZeroOut, ControlNet apply, ...) to the text encoders. An encoder's texts
    (TEXT_INPUTS: text, text_g, clip_g, t5xxl, clip_l, text_l, ...) come from its boxes or through
    links from string nodes (PrimitiveString(Multiline), StringConcatenate, generic string nodes);
    its distinct non-empty texts in TEXT_INPUTS order joined with ", " are one prompt. Several
    positive encoders give one prompt each; an identical text counts once. Negatives are never
    reached; cycles and dangling links are ignored. Raises GraphError for a non-graph.
    """
    if not isinstance(graph, Mapping) or not graph:
        raise GraphError("not a ComfyUI API graph: expected an object of nodes")
    if not any(isinstance(node, Mapping) and "class_type" in node for node in graph.values()):
        raise GraphError("not a ComfyUI API graph: no node has a class_type")
    try:
        return _Graph(graph).positive_prompts()[:MAX_PROMPTS_PER_IMAGE]
    except RecursionError:  # a chain of string nodes deeper than Python's stack
        raise GraphError("not a ComfyUI API graph: string links nested too deeply") from None


def a1111_prompt(parameters: str) -> str:
    """The positive prompt of an A1111 / Forge `parameters` text (before "Negative prompt:" or the "Steps:" line),
    or of a Fooocus JSON `parameters` object ("prompt")."""
    text = parameters.strip()
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, Mapping):
            prompt = document.get("prompt")
            return prompt.strip() if isinstance(prompt, str) else ""
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if line.startswith("Negative prompt:"):
            return "\n".join(lines[:i]).strip()
    if len(lines) > 1 and lines[-1].startswith("Steps:"):
        return "\n".join(lines[:-1]).strip()
    return text


# --- Image metadata --------------------------------------------------------------------------


class _Skip(Exception):
    """An image gives no prompt; args[0] is the reason (one of SKIP_REASONS)."""


class ImagePrompts(NamedTuple):
    """What one image's metadata says: its positive prompts and time, or why it gives none (immutable)."""

    prompts: tuple[str, ...] = ()
    time: float | None = None  # seconds since the epoch from the metadata; None: use the file's time
    skip: str | None = None  # the reason it gives no prompt (SKIP_REASONS)


def _read_exactly(f, count: int) -> bytes:
    data = f.read(count)
    if len(data) != count:
        raise _Skip(TRUNCATED)
    return data


def _text_value(data: bytes, kind: bytes) -> tuple[str, str]:
    """(keyword, text) of a tEXt / zTXt / iTXt chunk's data."""
    keyword, sep, rest = data.partition(b"\0")
    if not sep:
        return "", ""
    name = keyword.decode("latin-1")
    if kind == b"tEXt":
        return name, rest.decode("latin-1")
    if kind == b"zTXt":
        return name, _inflate(rest[1:]).decode("latin-1")
    if len(rest) < 2:  # iTXt: compression flag, method, language\0, translated keyword\0, text
        return name, ""
    compressed, body = rest[0], rest[2:]
    parts = body.split(b"\0", 2)
    if len(parts) < 3:
        return name, ""
    text = _inflate(parts[2]) if compressed else parts[2]
    return name, text.decode("utf-8", errors="replace")


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error:
        raise _Skip(UNREADABLE) from None
    if inflater.unconsumed_tail:
        raise _Skip(TOO_LARGE)
    return text


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_KEYS = {"prompt", "parameters"}


def _png_metadata(f) -> tuple[dict[str, str], float | None]:
    """The `prompt` / `parameters` texts and the tIME of a PNG; chunks are walked by seeking, pixel data is never read."""
    texts: dict[str, str] = {}
    time = None
    while True:
        header = f.read(8)
        if len(header) < 8:
            if texts:
                return texts, time  # a truncated tail after the metadata
            raise _Skip(TRUNCATED)
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND" or (kind == b"IDAT" and texts):
            return texts, time  # savers write their text chunks before the image data (SaveAnimatedPNG's after it)
        if kind in (b"tEXt", b"zTXt", b"iTXt", b"comf"):
            start = f.tell()
            keyword = f.read(min(length, 80)).partition(b"\0")[0].decode("latin-1")
            f.seek(start)
            if keyword in _PNG_TEXT_KEYS and keyword not in texts:
                if length > MAX_TEXT_BYTES:
                    raise _Skip(TOO_LARGE)
                data = _read_exactly(f, length)
                if kind == b"comf":  # SaveAnimatedPNG: keyword\0json, latin-1
                    texts[keyword] = data.partition(b"\0")[2].decode("latin-1")
                else:
                    texts[keyword] = _text_value(data, kind)[1]
                f.seek(4, os.SEEK_CUR)
                continue
        elif kind == b"tIME" and length == 7:
            year, month, day, hour, minute, second = struct.unpack(">HBBBBB", _read_exactly(f, 7))
            try:
                time = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc).timestamp()
            except ValueError:
                time = None
            f.seek(4, os.SEEK_CUR)
            continue
        f.seek(length + 4, os.SEEK_CUR)  # the data (pixels included) and the CRC, unread


_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}  # type -> bytes per value


def _exif_fields(tiff: bytes) -> dict[int, bytes]:
    """Raw values of the EXIF tags of IFD0 and the Exif sub-IFD (tag 0x8769), from TIFF-structured bytes."""
    if tiff.startswith(b"Exif\0\0"):
        tiff = tiff[6:]
    if tiff[:4] not in (b"II*\0", b"MM\0*"):
        return {}
    order = "<" if tiff[:2] == b"II" else ">"
    fields: dict[int, bytes] = {}
    pending = [struct.unpack(order + "I", tiff[4:8])[0]]
    visited: set[int] = set()
    while pending:
        offset = pending.pop()
        if offset in visited or offset + 2 > len(tiff):
            continue
        visited.add(offset)
        (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
        for i in range(count):
            entry = tiff[offset + 2 + 12 * i : offset + 14 + 12 * i]
            if len(entry) < 12:
                break
            tag, kind, n = struct.unpack(order + "HHI", entry[:8])
            size = _TIFF_TYPES.get(kind, 1) * n
            if size <= 4:
                value = entry[8 : 8 + size]
            else:
                (at,) = struct.unpack(order + "I", entry[8:12])
                value = tiff[at : at + size]
            if tag == 0x8769 and len(value) == 4:
                pending.append(struct.unpack(order + "I", value)[0])
            else:
                fields.setdefault(tag, value)
    return fields


def _exif_text(value: bytes) -> str:
    return value.rstrip(b"\0").decode("utf-8", errors="replace")


def _user_comment(value: bytes) -> str:
    """An EXIF UserComment: an 8-byte character code, then the text."""
    code, body = value[:8], value[8:]
    if code.startswith(b"UNICODE"):
        encoding = "utf-16-be" if body[:1] == b"\0" else "utf-16-le"  # A1111 (piexif) writes big-endian
        return body.decode(encoding, errors="replace").rstrip("\0")
    return body.decode("utf-8", errors="replace").rstrip("\0")


def _exif_metadata(tiff: bytes) -> tuple[dict[str, str], float | None]:
    fields = _exif_fields(tiff)
    texts: dict[str, str] = {}
    for tag in range(0x0110, 0x0100, -1):  # ComfyUI: 0x0110 "prompt:<json>", then 0x010F, 0x010E, ... "<key>:<json>"
        if tag in fields:
            key, sep, rest = _exif_text(fields[tag]).partition(":")
            if sep and key == "prompt":
                texts["prompt"] = rest
    if 0x9286 in fields:
        comment = _user_comment(fields[0x9286])
        if comment.strip():
            texts["parameters"] = comment
    return texts, _exif_time(fields)


def _exif_time(fields: dict[int, bytes]) -> float | None:
    for tag, offset_tag in ((0x9003, 0x9011), (0x0132, 0x9010)):
        if tag in fields:
            try:
                moment = datetime.strptime(_exif_text(fields[tag]).strip(), "%Y:%m:%d %H:%M:%S")
            except ValueError:
                continue
            offset = _exif_text(fields.get(offset_tag, b"")).strip()
            if len(offset) == 6 and offset[0] in "+-" and offset[3] == ":" and offset[1:3].isdigit() and offset[4:].isdigit():
                sign = 1 if offset[0] == "+" else -1
                zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:])))
                return moment.replace(tzinfo=zone).timestamp()
            return moment.timestamp()  # no zone: the local time of this machine
    return None


def _webp_metadata(f) -> tuple[dict[str, str], float | None]:
    header = _read_exactly(f, 12)
    (size,) = struct.unpack("<I", header[4:8])
    end = min(size + 8, os.fstat(f.fileno()).st_size)
    while f.tell() + 8 <= end:
        kind, length = struct.unpack("<4sI", f.read(8))
        if kind == b"EXIF":
            if length > MAX_TEXT_BYTES:
                raise _Skip(TOO_LARGE)
            return _exif_metadata(_read_exactly(f, length))
        f.seek(length + (length & 1), os.SEEK_CUR)
    if f.tell() < end:
        raise _Skip(TRUNCATED)
    return {}, None


def _jpeg_metadata(f) -> tuple[dict[str, str], float | None]:
    f.seek(2)
    texts: dict[str, str] = {}
    time = None
    while True:
        marker = f.read(2)
        if len(marker) < 2:
            raise _Skip(TRUNCATED)
        if marker[0] != 0xFF:
            raise _Skip(NOT_AN_IMAGE)
        if marker[1] in (0xD9, 0xDA):  # end of image, start of scan: no metadata after this
            return texts, time
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] == 0x01:
            continue
        (length,) = struct.unpack(">H", _read_exactly(f, 2))
        if length < 2:
            raise _Skip(TRUNCATED)
        if marker[1] == 0xE1 or marker[1] == 0xFE:
            data = _read_exactly(f, length - 2)
            if marker[1] == 0xE1 and data.startswith(b"Exif\0\0"):
                found, time = _exif_metadata(data)
                texts = {**found, **texts}
            elif marker[1] == 0xFE and "parameters" not in texts:
                texts["parameters"] = data.decode("utf-8", errors="replace")
        else:
            f.seek(length - 2, os.SEEK_CUR)


def _prompts_of(texts: dict[str, str]) -> tuple[str, ...]:
    if "prompt" in texts:
        try:
            graph = json.loads(texts["prompt"])
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
            raise _Skip(NOT_JSON) from None
        try:
            prompts = prompts_of_graph(graph)
        except GraphError:
            raise _Skip(NOT_A_GRAPH) from None
    elif "parameters" in texts:
        prompt = a1111_prompt(texts["parameters"])
        prompts = [prompt] if prompt else []
    else:
        raise _Skip(NO_METADATA)
    if not prompts:
        raise _Skip(NO_POSITIVE)
    return tuple(prompts)


def read_image_prompts(path: str | os.PathLike) -> ImagePrompts:
    """The positive prompts an image's metadata records (see the module docstring), never raising for a bad file:
    a file that gives none has `skip` set to the reason. Only regular files are opened."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return ImagePrompts(skip=UNREADABLE)
        with open(path, "rb") as f:
            head = f.read(12)
            f.seek(0)
            if head.startswith(PNG_SIGNATURE):
                f.seek(8)
                texts, time = _png_metadata(f)
            elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                texts, time = _webp_metadata(f)
            elif head[:3] == b"\xff\xd8\xff":
                texts, time = _jpeg_metadata(f)
            else:
                return ImagePrompts(skip=TRUNCATED if not head else NOT_AN_IMAGE)
        return ImagePrompts(_prompts_of(texts), time)
    except _Skip as skip:
        return ImagePrompts(skip=skip.args[0])
    except OSError:
        return ImagePrompts(skip=UNREADABLE)
    except (struct.error, ValueError, OverflowError):  # a damaged structure
        return ImagePrompts(skip=NOT_AN_IMAGE)


# --- Scan cache ------------------------------------------------------------------------------

CACHE_FORMAT = "drum-scan-cache/1"


class ScanCache:
    """What read_image_prompts found per (absolute path, size, mtime_ns): a re-scan of an unchanged folder reads no
    image again. An LRU bounded to `max_entries`; `save()` writes it to `path` (JSON, atomically) and a new
    ScanCache(path) reads it back. A changed file (size or mtime) misses; an unreadable or foreign cache file is
    ignored (the scan reads the images again)."""

    def __init__(self, path: str | os.PathLike | None = None, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.path = None if path is None else os.fspath(path)
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int, int], ImagePrompts] = OrderedDict()
        self.changed = False
        if self.path is not None:
            self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, int, int]) -> ImagePrompts | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)  # least recently used first out
        return found

    def put(self, key: tuple[str, int, int], value: ImagePrompts) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self.changed = True

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                document = json.load(f)
        except (OSError, ValueError):
            return
        if not isinstance(document, dict) or document.get("format") != CACHE_FORMAT or not isinstance(document.get("entries"), list):
            return
        for entry in document["entries"][-self.max_entries :]:
            try:
                path, size, mtime_ns, prompts, time, skip = entry
                value = ImagePrompts(tuple(prompts), None if time is None else float(time), skip)
                if not (isinstance(path, str) and isinstance(size, int) and isinstance(mtime_ns, int)):
                    continue
                if not all(isinstance(p, str) for p in value.prompts) or (skip is not None and skip not in SKIP_REASONS):
                    continue
            except (TypeError, ValueError):
                continue
            self._entries[(path, size, mtime_ns)] = value
        self.changed = False

    def save(self) -> None:
        """Write the cache to its file (atomically); a no-op without a path or when nothing changed."""
        if self.path is None or not self.changed:
            return
        entries = [[*key, list(v.prompts), v.time, v.skip] for key, v in self._entries.items()]
        with atomic_path(self.path) as temporary, open(temporary, "w", encoding="utf-8") as f:
            json.dump({"format": CACHE_FORMAT, "entries": entries}, f, ensure_ascii=False)
        self.changed = False


# --- Scans -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageScan:
    """A History from images, and what the scan saw.

    history: one record per positive prompt per image, oldest first (ties: by key); timestamp = the
        image's metadata time, else its file's modification time; rating from `ratings` by key.
    keys: per record, the image it came from: its path relative to `root` with "/" separators
        (absolute when outside root or without one); with dedupe, the newest image of the prompt.
    read: image files looked at (their metadata read, or found in the cache), whatever they gave.
    skipped: reason -> number of those that gave no prompt, plus "linked": links not followed.
    """

    history: History
    keys: tuple[str, ...]
    read: int
    skipped: dict[str, int] = field(default_factory=dict)

    def newest(self, n: int = 5) -> list[str]:
        """The prompts of the n newest records, newest first."""
        return [self.history.prompts[i] for i in self.history.most_recent(n)]


def _walk(folder: str, found: list[os.DirEntry | str], skipped: Counter) -> None:
    """Image files under `folder`, recursively; linked folders and files are not followed (counted as "linked")."""
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                listing = list(entries)  # any order: the records are sorted by time, then key
        except OSError:
            skipped[UNREADABLE] += 1
            continue
        for entry in listing:
            try:
                if entry.is_symlink():
                    if entry.name.lower().endswith(IMAGE_EXTENSIONS) or entry.is_dir():
                        skipped[LINKED] += 1
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(entry)
            except OSError:
                skipped[UNREADABLE] += 1


def _key(path: str, root: str | None) -> str:
    """`path` (absolute, normalized) relative to `root` with "/" separators; the whole path when outside root."""
    if root is not None:
        prefix = root if root.endswith(os.sep) else root + os.sep
        if path.startswith(prefix):
            path = path[len(prefix) :]
    return path.replace(os.sep, "/") if os.sep != "/" else path


def scan_images(
    sources: Iterable[str | os.PathLike],
    *,
    since: float | None = None,
    dedupe: bool = False,
    cache: ScanCache | None = None,
    ratings: Mapping[str, float] | None = None,
    root: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> ImageScan:
    """A History from folders (recursively; linked folders are not entered) and image files (see ImageScan).

    since: only images newer than this time (seconds since the epoch). dedupe: identical prompts make one
    record whose intensity is the number of images (the sum of their intensities), timestamp the newest,
    rating the mean of its images' ratings (unrated images left out; None when none is rated).
    cache: a ScanCache consulted and filled (not saved: call cache.save()). ratings: image key -> rating
    (0 or more); a rated record's intensity is its rating, an unrated one's 1.0. root: the folder keys
    are relative to (default: the one folder given, else none). progress(done, total) after each image.
    A missing source raises FileNotFoundError naming it.
    """
    sources = [os.path.abspath(os.fspath(s)) for s in sources]
    skipped: Counter = Counter()
    files: list[os.DirEntry | str] = []
    for source in sources:
        if os.path.isdir(source):
            _walk(source, files, skipped)
        elif os.path.lexists(source):
            files.append(source)
        else:
            raise FileNotFoundError(f"image folder or file not found: {source}")
    if root is None and len(sources) == 1 and os.path.isdir(sources[0]):
        root = sources[0]
    root = None if root is None else os.path.abspath(os.fspath(root))
    records: list[tuple[float, str, int, str]] = []  # (time, key, position in image, prompt)
    read = 0
    seen: set[str] = set()
    cached = cache.get if cache is not None else lambda key: None
    for done, file in enumerate(files, 1):
        given = isinstance(file, str)
        path = file if given else file.path
        if path in seen:  # a folder or an image given twice
            continue
        seen.add(path)
        try:
            info = os.stat(path) if given else file.stat(follow_symlinks=False)
        except OSError:
            skipped[UNREADABLE] += 1
            continue
        cache_key = (path, info.st_size, info.st_mtime_ns)
        found = cached(cache_key)
        if found is None:
            found = read_image_prompts(path)
            if cache is not None:
                cache.put(cache_key, found)
        if progress is not None:
            progress(done, len(files))
        if since is not None and (found.time if found.time is not None else info.st_mtime) <= since:
            continue
        read += 1
        if found.skip is not None:
            skipped[found.skip] += 1
            continue
        time = found.time if found.time is not None else info.st_mtime
        key = _key(path, root)
        if len(found.prompts) == 1:
            records.append((time, key, 0, found.prompts[0]))
        else:
            records.extend((time, key, position, prompt) for position, prompt in enumerate(found.prompts))
    records.sort()
    return _scan_result(records, read, skipped, dedupe, ratings, sources)


def _scan_result(records, read: int, skipped: Counter, dedupe: bool, ratings: Mapping[str, float] | None, sources) -> ImageScan:
    ratings = ratings or {}
    for key, rating in ratings.items():
        if not (isinstance(rating, (int, float)) and math.isfinite(rating) and rating >= 0):
            raise HistoryError(f"rating {rating!r} of image '{key}' must be a finite number >= 0")
    source = ", ".join(sources) if len(sources) <= 3 else f"{sources[0]} and {len(sources) - 1} more"
    if dedupe:
        merged: dict[str, list] = {}  # prompt -> [newest time, newest key, intensity, rating sum, rated count]
        for time, key, _, prompt in records:
            rating = ratings.get(key)
            entry = merged.setdefault(prompt, [time, key, 0.0, 0.0, 0])
            entry[0], entry[1] = time, key  # records are oldest first: the last one is the newest
            entry[2] += 1.0 if rating is None else float(rating)
            if rating is not None:
                entry[3] += float(rating)
                entry[4] += 1
        order = sorted(merged.items(), key=lambda item: (item[1][0], item[1][1]))
        prompts = [prompt for prompt, _ in order]
        values = [entry for _, entry in order]
        rated = [entry[3] / entry[4] if entry[4] else None for entry in values]
        history = History(
            prompts, [e[2] for e in values], [e[0] for e in values], source, ratings=rated if any(r is not None for r in rated) else None
        )
        return ImageScan(history, tuple(e[1] for e in values), read, dict(skipped))
    rated = [ratings.get(key) for _, key, _, _ in records]
    history = History(
        [prompt for *_, prompt in records],
        [1.0 if r is None else float(r) for r in rated],
        [time for time, *_ in records],
        source,
        ratings=rated if any(r is not None for r in rated) else None,
    )
    return ImageScan(history, tuple(key for _, key, _, _ in records), read, dict(skipped))


def is_image_source(path: str | os.PathLike) -> bool:
    """Whether `path` names a folder or an image file (read by scan_images) rather than a history file."""
    return os.path.isdir(path) or os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def load_any_history(path: str | os.PathLike, *, since: float | None = None, dedupe: bool = False) -> History:
    """A history file (load_history: .txt .csv .tsv .json .jsonl), or a folder of images / an image (scan_images).

    A folder or image that yields no prompt raises HistoryError naming it and what was skipped."""
    if not is_image_source(path):
        return load_history(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image folder or file not found: {path}")
    scan = scan_images([path], since=since, dedupe=dedupe)
    if not len(scan.history):
        raise HistoryError(f"{path}: no prompt found in {scan.read} images read ({describe_skipped(scan.skipped)})")
    return scan.history


def describe_skipped(skipped: Mapping[str, int]) -> str:
    """ "3 skipped: 2 no metadata, 1 not an image" (or "none skipped")."""
    total = sum(skipped.values())
    if not total:
        return "none skipped"
    return f"{total} skipped: " + ", ".join(
        f"{count} {reason}" for reason, count in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
    )


def write_history_csv(history: History, path: str | os.PathLike, *, intensities: bool = False) -> None:
    """The history as a CSV file that load_history reads back (written atomically).

    Columns: prompt; timestamp when known; then either rating (when any record is rated; an unrated
    record's cell is empty) or, with intensities=True, weight = each record's intensity (a deduped
    scan's merged counts). load_history makes a rated record's intensity its rating (unrated: 1.0), and
    reads a weight column as both rating and intensity."""
    import csv

    values = history.intensities if intensities else history.ratings
    last = [] if values is None else ["weight" if intensities else "rating"]
    columns = ["prompt"] + (["timestamp"] if history.timestamps is not None else []) + last
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, prompt in enumerate(history.prompts):
            row = [prompt] + ([] if history.timestamps is None else [_number(history.timestamps[i])])
            writer.writerow(row + ([] if values is None else [_number(values[i])]))


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIP_REASONS",
    "GraphError",
    "ImagePrompts",
    "ImageScan",
    "ScanCache",
    "a1111_prompt",
    "describe_skipped",
    "is_image_source",
    "load_any_history",
    "prompts_of_graph",
    "read_image_prompts",
    "scan_images",
    "write_history_csv",
]
