"""DrUM History Loader: a user's prompt history from ComfyUI's input folder or pasted text."""

from __future__ import annotations

import hashlib
import os

import folder_paths
from comfy_api.latest import io

from drum_core.history import History, HistoryError, load_history, parse_history_text

from .io_types import NONE, DrumHistory, DrumHistoryType

HISTORY_EXTENSIONS = (".txt", ".csv", ".tsv", ".json", ".jsonl")
HISTORY_FOLDER_DEPTH = 3  # sub-folder levels of the input folder searched; the list is rebuilt at every schema build


def history_files() -> list[str]:
    """History files in ComfyUI's input folder and its sub-folders down to HISTORY_FOLDER_DEPTH levels, "/"-separated,
    sorted. Symlinked folders are not entered (a link loop would never end; resolve_history_file refuses what lies outside)."""
    root = folder_paths.get_input_directory()
    found = []
    for folder, dirs, files in os.walk(root):
        relative = os.path.relpath(folder, root)
        if relative != "." and relative.count(os.sep) + 1 >= HISTORY_FOLDER_DEPTH:
            dirs.clear()  # deep enough: list this folder, do not go further down
        for name in files:
            if name.lower().endswith(HISTORY_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


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


class DrUMHistoryLoader(io.ComfyNode):
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
                io.Combo.Input(
                    "file",
                    options=[NONE, *history_files()],
                    default=NONE,
                    tooltip="History file in ComfyUI's input folder; 'none' to use the text box only.",
                ),
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
    def validate_inputs(cls, file: str, text: str = "") -> bool | str:
        if file != NONE and not text.strip():
            try:
                resolve_history_file(file)
            except HistoryError as error:
                return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, file: str, text: str = "") -> str:
        digest = hashlib.sha256(text.encode())
        if file != NONE:
            try:
                with open(resolve_history_file(file), "rb") as f:
                    digest.update(f.read())
            except (HistoryError, OSError) as error:
                digest.update(str(error).encode())
        return digest.hexdigest()

    @classmethod
    def execute(cls, file: str, text: str = "") -> io.NodeOutput:
        loaded = DrumHistory(read_history(file, text))
        source = "pasted text" if text.strip() else file
        ui = {"drum_history": [{"count": len(loaded.history), "source": source, "preview": loaded.preview()}]}
        return io.NodeOutput(loaded, ui=ui)


NODES = [DrUMHistoryLoader]
