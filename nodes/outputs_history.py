"""DrUM History from Outputs: the user's prompt history read off the images in ComfyUI's output folder.

ComfyUI writes the API graph of every run into the images it saves; `drum_core.image_history` reads
the positive prompts back (metadata only). This node picks the folder (a combo of the output folder's
sub-folders, the root first), adds the prompts of the server's queue history that saved no image
(`include_queue`), attaches the ratings the user clicked on the page, and shows what was read and
skipped in its panel.

State with an owner and a bound: one `OutputsReader`, kept by the pack's state (`DrumState.outputs`,
nodes/state.py), holds the folder list (rebuilt only when a listed folder changed, at most
FOLDERS_LISTED) and the scan cache (drum_core ScanCache, an LRU of at most SCAN_CACHE_ENTRIES images,
persisted in the pack's System User folder beside the ratings).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping

import folder_paths
from comfy_api.latest import io

from drum_core.history import SECONDS_PER_DAY, History, HistoryError
from drum_core.image_history import GraphError, ImageScan, ScanCache, prompts_of_graph, scan_images
from drum_core.ratings import load_ratings, ratings_stamp

from .checked import CheckedNode
from .clip_bridge import progress_reporter
from .io_types import DrumHistory, DrumHistoryType
from .ratings_route import pack_user_folder, ratings_file

ROOT_FOLDER = "(all outputs)"  # the combo's first entry: the whole output folder, sub-folders included
FOLDER_DEPTH = 3  # sub-folder levels of the output folder offered in the combo
FOLDERS_LISTED = 500  # at most this many sub-folders in the combo (the root still scans everything)
NEWEST_SHOWN = 20  # newest prompts in the node's panel
SCAN_CACHE_FILE = "outputs-scan.json"  # in the pack's System User folder (ratings_route.pack_user_folder)
SCAN_CACHE_ENTRIES = 200_000  # images remembered (least recently seen dropped first): ~40 MB of JSON at 200 bytes each


class OutputsError(HistoryError):
    """A folder choice the node cannot read (missing, outside the output folder)."""


def _walk_folders(root: str, depth: int) -> Iterator[tuple[str, str]]:
    """(relative "/"-separated name, path) of the real (not linked) sub-folders of `root`, `depth` levels down, sorted."""
    pending = [("", root, 0)]
    while pending:
        relative, path, level = pending.pop()
        try:
            entries = sorted(os.scandir(path), key=lambda entry: entry.name, reverse=True)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue  # hidden folders (caches, trash) and linked folders are not offered
            name = f"{relative}/{entry.name}" if relative else entry.name
            yield name, entry.path
            if level + 1 < depth:
                pending.append((name, entry.path, level + 1))


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class OutputsReader:
    """Owner of the output-folder state: the cached folder list and the persisted, bounded scan cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: tuple[str, list[str], dict[str, int | None]] | None = None  # (root, names, listed folder -> mtime)
        self._cache: ScanCache | None = None

    # ------------------------------------------------------------------ folders
    @staticmethod
    def root() -> str:
        return os.path.realpath(folder_paths.get_output_directory())

    def folders(self) -> list[str]:
        """ROOT_FOLDER, then the output folder's sub-folders (FOLDER_DEPTH levels, at most FOLDERS_LISTED). Kept until a
        listed folder changes: a new or removed sub-folder changes its parent's modification time."""
        root = self.root()
        with self._lock:
            if self._folders is not None:
                cached_root, names, stamps = self._folders
                if cached_root == root and all(_mtime(path) == stamp for path, stamp in stamps.items()):
                    return list(names)
            stamps: dict[str, int | None] = {root: _mtime(root)}
            names = [ROOT_FOLDER]
            for name, path in _walk_folders(root, FOLDER_DEPTH):
                if len(names) > FOLDERS_LISTED:
                    break
                if name != ROOT_FOLDER:
                    names.append(name)
                    stamps[path] = _mtime(path)
            names[1:] = sorted(names[1:])
            self._folders = (root, names, stamps)
            return list(names)

    def resolve(self, folder: str) -> str:
        """The path of output sub-folder `folder` (ROOT_FOLDER = the output folder); OutputsError for a missing folder or
        one outside the output folder (no absolute paths, no '..', no link leading out)."""
        root = self.root()
        if folder == ROOT_FOLDER:
            if not os.path.isdir(root):
                raise OutputsError(f"DrUM History from Outputs: ComfyUI's output folder {root} does not exist")
            return root
        parts = folder.replace("\\", "/").split("/")
        if os.path.isabs(folder) or ".." in parts or "" in parts:
            raise OutputsError(f"DrUM History from Outputs: folder '{folder}' must be a sub-folder of ComfyUI's output folder")
        path = os.path.realpath(os.path.join(root, *parts))
        if os.path.commonpath([path, root]) != root:
            raise OutputsError(f"DrUM History from Outputs: folder '{folder}' leads outside ComfyUI's output folder")
        if not os.path.isdir(path):
            raise OutputsError(f"DrUM History from Outputs: folder '{folder}' not found in ComfyUI's output folder ({root})")
        return path

    # ------------------------------------------------------------------ scan cache
    @staticmethod
    def cache_path() -> str:
        return os.path.join(pack_user_folder(), SCAN_CACHE_FILE)

    def scan_cache(self) -> ScanCache:
        """The scan cache, read from its file once (again if ComfyUI's user folder moved)."""
        path = self.cache_path()
        with self._lock:
            if self._cache is None or self._cache.path != path:
                self._cache = ScanCache(path, max_entries=SCAN_CACHE_ENTRIES)
            return self._cache

    def save_cache(self) -> None:
        """Writes the cache's file when a scan added to it (atomically)."""
        with self._lock:
            if self._cache is not None and self._cache.path is not None:
                os.makedirs(os.path.dirname(self._cache.path), exist_ok=True)
                self._cache.save()

    # ------------------------------------------------------------------ fingerprint
    def fingerprint(self, folder: str) -> str:
        """Changes when an image under `folder` is added, removed, rewritten or touched (names, sizes, modification
        times of the files; linked folders not entered, as the scan does). No file is opened."""
        digest = hashlib.sha256(folder.encode())
        try:
            top = self.resolve(folder)
        except OutputsError as error:
            digest.update(str(error).encode())
            return digest.hexdigest()
        for path, dirs, files in os.walk(top):  # linked folders are listed, not entered
            dirs.sort()
            for name in sorted(files):
                try:
                    stat = os.stat(os.path.join(path, name), follow_symlinks=False)
                except OSError:
                    continue
                digest.update(f"{path}\0{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        return digest.hexdigest()


# ------------------------------------------------------------------ queue history
def prompt_queue():
    """ComfyUI's prompt queue, or None where no server runs (scripts, the in-process test tier)."""
    try:
        import server
    except ImportError:
        return None
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    return getattr(instance, "prompt_queue", None)


def _saved_an_image(entry: Mapping) -> bool:
    outputs = entry.get("outputs")
    if not isinstance(outputs, Mapping):
        return False
    for output in outputs.values():
        images = output.get("images") if isinstance(output, Mapping) else None
        if isinstance(images, list) and any(isinstance(image, Mapping) and image.get("type") == "output" for image in images):
            return True
    return False


def _started_at(entry: Mapping) -> float | None:
    """The run's start (seconds since the epoch) from its status messages."""
    status = entry.get("status")
    messages = status.get("messages") if isinstance(status, Mapping) else None
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, (list, tuple)) and len(message) == 2 and message[0] == "execution_start":
            stamp = message[1].get("timestamp") if isinstance(message[1], Mapping) else None
            if isinstance(stamp, (int, float)):
                return stamp / 1000.0
    return None


def queue_prompts(history: Mapping | None, since: float | None) -> list[tuple[float | None, str]]:
    """(time, prompt) of the successful runs in a queue history (PromptQueue.get_history()) that saved no image to
    the output folder, oldest first: the positive prompts of each run's graph."""
    found: list[tuple[float | None, str]] = []
    for entry in (history or {}).values():
        if not isinstance(entry, Mapping) or _saved_an_image(entry):
            continue
        status = entry.get("status")
        if not isinstance(status, Mapping) or status.get("status_str") != "success":
            continue
        prompt = entry.get("prompt")
        graph = prompt[2] if isinstance(prompt, (list, tuple)) and len(prompt) > 2 else None
        if not isinstance(graph, Mapping):
            continue
        started = _started_at(entry)
        if since is not None and (started is None or started <= since):
            continue
        try:
            texts = prompts_of_graph(graph)
        except GraphError:
            continue  # not a graph the scanner reads: it gives no prompt, as such an image would
        found.extend((started, text) for text in texts)
    order = sorted(range(len(found)), key=lambda i: (found[i][0] is not None, found[i][0] or 0.0, i))
    return [found[i] for i in order]


# ------------------------------------------------------------------ the history
def with_queue(scan: History, queued: list[tuple[float | None, str]], dedupe: bool) -> History:
    """The scan's records and the queue's (intensity 1, unrated) in time order (records without a time first). With
    dedupe, a queued prompt the history already holds adds 1 to that record's intensity and moves it to the newer
    time, as the scan's own dedupe does."""
    if not queued:
        return scan
    times = scan.timestamps if scan.timestamps is not None else (None,) * len(scan)
    ratings = scan.ratings if scan.ratings is not None else (None,) * len(scan)
    records = [[times[i], scan.prompts[i], scan.intensities[i], ratings[i]] for i in range(len(scan))]
    merged = {record[1]: record for record in records} if dedupe else {}
    for stamp, text in queued:
        if text in merged:
            record = merged[text]
            record[2] += 1.0
            if stamp is not None and (record[0] is None or stamp > record[0]):
                record[0] = stamp
            continue
        records.append([stamp, text, 1.0, None])
        if dedupe:
            merged[text] = records[-1]
    records.sort(key=lambda r: (r[0] is not None, r[0] or 0.0))  # stable: records of one time keep their order
    rated = [r[3] for r in records]
    return History(
        [r[1] for r in records],
        [r[2] for r in records],
        [r[0] for r in records],
        source=scan.source,
        ratings=rated if any(r is not None for r in rated) else None,
    )


def since_time(since_days: float, now: float | None = None) -> float | None:
    return None if since_days <= 0 else (time.time() if now is None else now) - since_days * SECONDS_PER_DAY


def read_outputs(
    reader: OutputsReader, folder: str, since_days: float, dedupe: bool, include_queue: bool
) -> tuple[History, ImageScan, int]:
    """(history, the scan, number of queue prompts added), through `reader`'s folder list and scan cache. The ratings
    clicked on the page (ratings_route) rate the images they name; a ratings file that cannot be read stops the run
    with its error (never read as empty)."""
    path = reader.resolve(folder)
    since = since_time(since_days)
    ratings = load_ratings(ratings_file())
    cache = reader.scan_cache()
    try:
        scan = scan_images(
            [path], since=since, dedupe=dedupe, cache=cache, ratings=ratings, root=reader.root(), progress=progress_reporter()
        )
    finally:
        reader.save_cache()  # what was read before an interruption is kept
    queued = []
    if include_queue:
        queue = prompt_queue()
        queued = queue_prompts(queue.get_history() if queue is not None else None, since)
    return with_queue(scan.history, queued, dedupe), scan, len(queued)


class DrUMOutputsHistory(CheckedNode):
    LISTED_ELSEWHERE = ("folder",)  # checked by OutputsReader.resolve

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMOutputsHistory",
            display_name="DrUM History from Outputs",
            category="conditioning/DrUM",
            description=(
                "Your ComfyUI outputs are your history: reads the positive prompts ComfyUI (and A1111 / Forge / Fooocus) "
                "wrote into the images of the output folder, one record per prompt, oldest first, timestamp = the image's "
                "time. Only metadata is read, never pixels; unchanged images are not read again. Images you liked or "
                "disliked on the page carry their rating (for DrUM History Split)."
            ),
            inputs=[
                io.Combo.Input(
                    "folder",
                    options=cls.state().outputs.folders(),
                    default=ROOT_FOLDER,
                    tooltip=f"Sub-folder of ComfyUI's output folder to read (with its sub-folders); {ROOT_FOLDER} = all of it.",
                ),
                io.Float.Input(
                    "since_days",
                    default=0.0,
                    min=0.0,
                    max=36500.0,
                    step=1.0,
                    tooltip="Only images (and queue runs) of the last this many days; 0 = all.",
                ),
                io.Boolean.Input(
                    "dedupe",
                    default=False,
                    tooltip="Merge identical prompts into one record, intensities summed. Off: a prompt drawn five times counts five times.",
                ),
                io.Boolean.Input(
                    "include_queue",
                    default=True,
                    tooltip="Also take the prompts of this server's queue history whose runs saved no image (previews, failed saves).",
                ),
            ],
            outputs=[DrumHistoryType.Output(display_name="history", tooltip="The prompts of your outputs, oldest first.")],
        )

    @classmethod
    def input_error(cls, values: dict) -> str | None:
        if values.get("folder") is None:  # linked: checked at execution
            return None
        try:
            cls.state().outputs.resolve(values["folder"])
        except OutputsError as error:
            return str(error).removeprefix("DrUM History from Outputs: ")  # error_of names the node
        return None

    @classmethod
    def fingerprint_inputs(cls, folder: str, since_days: float = 0.0, dedupe: bool = False, include_queue: bool = True) -> str:
        if folder is None:  # linked, not computed yet
            return ""
        digest = hashlib.sha256(cls.state().outputs.fingerprint(folder).encode())
        digest.update(repr(ratings_stamp(ratings_file())).encode())  # a click on thumbs up / down changes it
        if since_days is not None and since_days > 0:
            digest.update(f"{time.time() // 3600}".encode())  # the window moves: at least hourly
        if include_queue:
            queue = prompt_queue()
            digest.update(",".join(queue.get_history() if queue is not None else {}).encode())
        return digest.hexdigest()

    @classmethod
    def execute(cls, folder: str, since_days: float = 0.0, dedupe: bool = False, include_queue: bool = True) -> io.NodeOutput:
        cls.check_inputs(folder=folder, since_days=since_days, dedupe=dedupe, include_queue=include_queue)
        history, scan, queued = read_outputs(cls.state().outputs, folder, since_days, dedupe, include_queue)
        loaded = DrumHistory(history)
        newest = history.most_recent(NEWEST_SHOWN)
        panel = {
            "folder": folder,
            "count": len(history),
            "read": scan.read,
            "skipped": dict(sorted(scan.skipped.items())),
            "queue": queued,
            "newest": [{"prompt": history.prompts[i], "weight": history.intensities[i]} for i in newest],
        }
        return io.NodeOutput(loaded, ui={"drum_outputs": [panel]})


NODES = [DrUMOutputsHistory]
