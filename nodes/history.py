"""DrUM History Loader: a user's prompt history from ComfyUI's input folder or pasted text."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading

import folder_paths
from aiohttp import web
from comfy_api.latest import io

from drum_core.history import HISTORY_EXTENSIONS, History, HistoryError, load_history, parse_history_text

from .checked import CheckedNode
from .io_types import NONE, DrumHistory, DrumHistoryType

HISTORY_FOLDER_DEPTH = 3  # sub-folder levels of the input folder searched


def walk_history_files(root: str) -> tuple[list[str], dict[str, int]]:
    """(history files under `root` down to HISTORY_FOLDER_DEPTH levels, "/"-separated, sorted; {folder walked: its mtime_ns}).
    Symlinked folders are not entered (a link loop would never end; resolve_history_file refuses what lies outside)."""
    found, stamps = [], {}
    for folder, dirs, files in os.walk(root):
        with contextlib.suppress(OSError):
            stamps[folder] = os.stat(folder).st_mtime_ns
        relative = os.path.relpath(folder, root)
        if relative != "." and relative.count(os.sep) + 1 >= HISTORY_FOLDER_DEPTH:
            dirs.clear()  # deep enough: list this folder, do not go further down
        for name in files:
            if name.lower().endswith(HISTORY_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found), stamps


class HistoryFileListing:
    """The History Loader's file list (one, kept by the pack's state: `DrumState.history_files`), kept between schema builds (the validate_prompt of ComfyUI 0.38.1 builds every queued node's
    schema on every queue). Walked again when the input folder moves, when any folder walked changed its mtime (a file
    added, removed or renamed there, an upload included), or after `invalidate()` (the upload route calls it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root: str | None = None
        self._stamps: dict[str, int] = {}  # one entry per folder walked: bounded by the walk
        self._files: list[str] = []

    def _unchanged(self, root: str) -> bool:
        try:
            return root == self._root and all(os.stat(folder).st_mtime_ns == stamp for folder, stamp in self._stamps.items())
        except OSError:
            return False

    def files(self) -> list[str]:
        root = folder_paths.get_input_directory()
        with self._lock:
            if not self._unchanged(root):
                self._files, self._stamps = walk_history_files(root)
                self._root = root
            return list(self._files)

    def invalidate(self) -> None:
        with self._lock:
            self._root = None


def upload_watch(listing: HistoryFileListing):
    """An aiohttp middleware that invalidates `listing` after ComfyUI's upload route (/upload/image, also under /api)
    wrote into the input folder; marked `drum_upload_watch` so the extension adds one only."""

    @web.middleware
    async def forget_history_files_on_upload(request: web.Request, handler):
        response = await handler(request)
        if request.method == "POST" and request.path.endswith("/upload/image"):
            listing.invalidate()
        return response

    forget_history_files_on_upload.drum_upload_watch = True
    return forget_history_files_on_upload


def resolve_history_file(name: str) -> str:
    """The path of input-folder file `name`; raises HistoryError for paths outside that folder."""
    root = os.path.realpath(folder_paths.get_input_directory())
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise HistoryError(f"history file '{name}': only files inside ComfyUI's input folder can be read (no absolute paths or '..')")
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([path, root]) != root:
        raise HistoryError(f"history file '{name}' leads outside ComfyUI's input folder")
    if not os.path.isfile(path):
        raise HistoryError(f"history file '{name}' not found in ComfyUI's input folder")
    if not name.lower().endswith(HISTORY_EXTENSIONS):
        raise HistoryError(f"history file '{name}': unsupported extension (use {', '.join(HISTORY_EXTENSIONS)})")
    return path


def load_input_history(name: str) -> History:
    """The history in input-folder file `name`; a HistoryError names the file as the user named it, not by its server path
    (the message reaches the page)."""
    path = resolve_history_file(name)
    try:
        return load_history(path)
    except HistoryError as error:
        raise HistoryError(str(error).replace(path, name)) from None


def read_history(file: str, text: str) -> History:
    """Pasted text wins over the file; neither gives an empty history (plain conditioning)."""
    if text.strip():
        return parse_history_text(text, source="pasted history")
    if file == NONE:
        return History([], source="no history")
    return load_input_history(file)


def history_file_input(files: list[str]) -> io.Combo.Input:
    """The `file` widget offering `files` (HistoryFileListing.files). Its options carry the history file extensions (drum_core.history.HISTORY_EXTENSIONS) as
    `drum_history_extensions`, so the page's upload and drop checks read the core's tuple from /object_info."""
    combo = io.Combo.Input(
        "file",
        options=[NONE, *files],
        default=NONE,
        tooltip="History file in ComfyUI's input folder; 'none' to use the text box only.",
    )
    combo.extra_dict = {**combo.extra_dict, "drum_history_extensions": list(HISTORY_EXTENSIONS)}
    return combo


class DrUMHistoryLoader(CheckedNode):
    LISTED_ELSEWHERE = ("file",)  # any history file inside the input folder, listed or not

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMHistoryLoader",
            display_name="DrUM History Loader",
            category="conditioning/DrUM",
            description=(
                "Loads a user's prompt history: a file from ComfyUI's input folder (.txt one prompt a line with an optional "
                "tab-separated rating, .csv/.tsv, .json, .jsonl) or prompts pasted into the text box. Ratings become the "
                "preference intensities p_i. With no file and no text the history is empty and DrUM leaves prompts unchanged."
            ),
            inputs=[
                history_file_input(cls.state().history_files.files()),
                io.String.Input(
                    "text",
                    multiline=True,
                    default="",
                    placeholder="one prompt a line; optional rating after a tab",
                    tooltip="Prompts pasted here, one a line (optional TAB + rating). Used instead of the file when not empty.",
                ),
            ],
            outputs=[DrumHistoryType.Output(display_name="history", tooltip="The prompts with their preference intensities.")],
        )

    @classmethod
    def input_error(cls, values: dict) -> str | None:
        file, text = values.get("file"), values.get("text")
        if file is None or text is None or file == NONE or text.strip():  # linked (unknown yet), or the file is not read
            return None
        try:
            resolve_history_file(file)
        except HistoryError as error:
            return str(error)
        return None

    @classmethod
    def fingerprint_inputs(cls, file: str, text: str = "") -> str:
        digest = hashlib.sha256((text or "").encode())  # None: linked and not computed yet
        if file is not None and file != NONE:
            try:
                with open(resolve_history_file(file), "rb") as f:
                    digest.update(f.read())
            except (HistoryError, OSError) as error:
                digest.update(str(error).encode())
        return digest.hexdigest()

    @classmethod
    def execute(cls, file: str, text: str = "") -> io.NodeOutput:
        cls.check_inputs(file=file, text=text)
        loaded = DrumHistory(read_history(file, text))
        source = "pasted text" if text.strip() else file
        ui = {"drum_history": [{"count": len(loaded.history), "source": source, "preview": loaded.preview()}]}
        return io.NodeOutput(loaded, ui=ui)


NODES = [DrUMHistoryLoader]
