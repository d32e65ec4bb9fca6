"""DrUM PeCA Loader: the adapters of the published layout, from ComfyUI's `models/drum` folder.

The folder is registered like ComfyUI's own model folders, so `extra_model_paths.yaml` can
add more (`drum: path/to/adapters`). Only `.safetensors` files are listed (never unpickled).
"""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from drum_core.peca import PeCA, PeCAFormatError
from drum_core.personalizer import ENCODER_ADAPTERS, AdapterMismatchError

from .io_types import ADAPTER_SLOTS, AUTO, NONE, AdapterChoice, DrumPeCAType

log = logging.getLogger(__name__)
FOLDER = "drum"


def register_folder() -> None:
    """models/drum (+ any `drum:` paths from extra_model_paths.yaml), .safetensors only."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    paths, _extensions = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, {".safetensors"})


_loaded: dict[str, tuple[tuple[int, int], PeCA]] = {}  # path -> ((size, mtime), adapter)


def load_adapter(name: str, slot: str | None = None) -> PeCA:
    """Adapter file `name` of the drum folder (cached by path, size and mtime); checked against `slot`."""
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise FileNotFoundError(f"PeCA adapter '{name}' not found in the drum model folders {folder_paths.get_folder_paths(FOLDER)}")
    stat = os.stat(path)
    stamp = (stat.st_size, stat.st_mtime_ns)
    if path not in _loaded or _loaded[path][0] != stamp:
        _loaded[path] = (stamp, PeCA.from_file(path))
    adapter = _loaded[path][1]
    found = adapter.config.name
    if slot is not None and found != slot:
        made_for = f"the {found} encoder" if found else f"a custom {adapter.config.kind} encoder of width {adapter.config.encoder_width}"
        raise AdapterMismatchError(f"PeCA adapter '{name}' is made for {made_for}, not {slot}: choose it in the {found or 'matching'} slot")
    return adapter


def auto_files(slot: str) -> list[str]:
    """Drum-folder files named like the published `slot` adapter: `L.safetensors` first, then `*_L` / `*-L` (any case)."""
    wanted = slot.lower()
    exact, suffixed = [], []
    for name in folder_paths.get_filename_list(FOLDER):
        stem = os.path.splitext(os.path.basename(name))[0].lower()
        if stem == wanted:
            exact.append(name)
        elif stem.endswith(("_" + wanted, "-" + wanted)):
            suffixed.append(name)
    return exact + suffixed


def auto_adapter(slot: str) -> PeCA:
    """The first file of `auto_files(slot)` that really is a `slot` adapter."""
    rejected = []
    for file in auto_files(slot):
        try:
            adapter = load_adapter(file, slot)
        except (PeCAFormatError, AdapterMismatchError) as error:
            rejected.append(str(error))
            continue
        log.info("DrUM: auto-selected %s for the %s encoder", file, slot)
        return adapter
    raise AdapterMismatchError(
        f"no {slot} adapter for 'auto': put {slot}.safetensors (or *_{slot}.safetensors) into {folder_paths.get_folder_paths(FOLDER)}"
        + (f" (skipped: {'; '.join(rejected)})" if rejected else "")
    )


def resolve(choice: AdapterChoice, encoder_names) -> dict[str, PeCA]:
    """The adapter of every encoder present (Personalizer names "l", "h", "g", "t5"); named errors."""
    adapters = {}
    for name in encoder_names:
        slot = ENCODER_ADAPTERS[name]
        value = choice.slots.get(slot, AUTO)
        if value == NONE:
            raise AdapterMismatchError(
                f"the CLIP has the {slot} text encoder but the PeCA Loader's {slot} slot is 'none': choose the {slot} adapter"
            )
        adapters[name] = auto_adapter(slot) if value == AUTO else value
    return adapters


def _slot_input(slot: str) -> io.Combo.Input:
    encoder = {"L": "CLIP-L", "H": "OpenCLIP-H (SD2)", "bigG": "OpenCLIP-bigG", "T5": "T5-XXL"}[slot]
    return io.Combo.Input(
        slot,
        options=[AUTO, NONE, *folder_paths.get_filename_list(FOLDER)],
        default=AUTO,
        tooltip=f"Adapter for the {encoder} text encoder. 'auto': the file named {slot}.safetensors or *_{slot}.safetensors, "
        "used only when the model has this encoder; 'none': no adapter (an error if the model has this encoder).",
    )


class DrUMPeCALoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMPeCALoader",
            display_name="DrUM PeCA Loader",
            category="conditioning/DrUM",
            description=(
                "Loads the PeCA adapters (L, H, bigG, T5 .safetensors files of the DrUM release) from models/drum. "
                "The conditioner matches them to the CLIP's text encoders and stops with an error before sampling when "
                "one is missing or made for another encoder."
            ),
            inputs=[_slot_input(slot) for slot in ADAPTER_SLOTS],
            outputs=[
                DrumPeCAType.Output(display_name="adapters", tooltip="The chosen adapters, matched to the encoders by the conditioner.")
            ],
        )

    @classmethod
    def validate_inputs(cls, L: str, H: str, bigG: str, T5: str) -> bool | str:
        for slot, value in zip(ADAPTER_SLOTS, (L, H, bigG, T5)):
            if value in (AUTO, NONE):
                continue
            try:
                load_adapter(value, slot)
            except (OSError, PeCAFormatError, AdapterMismatchError) as error:
                return f"{slot} slot: {error}"
        return True

    @classmethod
    def execute(cls, L: str, H: str, bigG: str, T5: str) -> io.NodeOutput:
        slots, files = {}, {}
        for slot, value in zip(ADAPTER_SLOTS, (L, H, bigG, T5)):
            slots[slot] = value if value in (AUTO, NONE) else load_adapter(value, slot)
            files[slot] = value
        return io.NodeOutput(AdapterChoice(slots, files))


NODES = [DrUMPeCALoader]
