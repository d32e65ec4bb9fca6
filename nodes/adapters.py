"""DrUM PeCA Loader: the adapters of the published layout, from ComfyUI's `models/drum` folder.

The folder is registered like ComfyUI's own model folders, so `extra_model_paths.yaml` can
add more (`drum: path/to/adapters`). Only `.safetensors` files are listed (never unpickled).

Loaded adapters live under ComfyUI's model management, like its CLIP vision models: each gets a
`comfy.model_patcher.ModelPatcher` (load device: the text encoders'; offload device: theirs) and
is brought in with `load_models_gpu` right before use, so ComfyUI offloads it when the diffusion
model needs the memory. The pack's state keeps the last ADAPTERS_KEPT adapters, each with its
file stamp and its patcher (nodes/state.py; published fp32 sizes: L 107 MB, H 189 MB, bigG 296 MB,
T5 287 MB).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import comfy.model_management
import comfy.model_patcher
import folder_paths
import torch
from comfy_api.latest import io

from drum_core.adapter_names import ADAPTER_NAMES, ENCODER_ADAPTERS, ENCODER_TITLES
from drum_core.peca import PeCA, PeCAConfig, PeCAFormatError
from drum_core.personalizer import AdapterMismatchError
from drum_core.weights import adapter_files

from . import clip_bridge
from .checked import CheckedNode
from .io_types import AUTO, NONE, AdapterChoice, DrumPeCAType
from .state import DrumState, KeptAdapter

log = logging.getLogger(__name__)
FOLDER = "drum"


def adapter_path(name: str) -> str:
    """The full path of adapter file `name` in the drum model folders; FileNotFoundError naming the folders."""
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise FileNotFoundError(f"PeCA adapter '{name}' not found in the drum model folders {folder_paths.get_folder_paths(FOLDER)}")
    return path


def load_adapter(state: DrumState, name: str, slot: str | None = None) -> PeCA:
    """Adapter file `name` of the drum folder (kept in `state.adapters` by path, size and mtime); checked against `slot`."""
    path = adapter_path(name)
    stat = os.stat(path)
    stamp = (stat.st_size, stat.st_mtime_ns)
    kept = state.adapters.get(path)
    if kept is None or kept.stamp != stamp:
        kept = state.adapters.put(path, KeptAdapter(stamp, PeCA.from_file(path)))
    check_slot(name, kept.adapter.config, slot)
    return kept.adapter


def check_slot(name: str, config: PeCAConfig, slot: str | None) -> None:
    """AdapterMismatchError when adapter file `name` (of `config`) is not made for the encoder of `slot` (None: any)."""
    found = config.name
    if slot is not None and found != slot:
        made_for = f"the {found} encoder" if found else f"a custom {config.kind} encoder of width {config.encoder_width}"
        raise AdapterMismatchError(f"PeCA adapter '{name}' is made for {made_for}, not {slot}: choose it in the {found or 'matching'} slot")


class ManagedAdapter(torch.nn.Module):
    """The module a ModelPatcher manages for one adapter (the patcher sets its bookkeeping attributes, e.g. `device`, on it)."""

    def __init__(self, adapter: PeCA):
        super().__init__()
        self.adapter = adapter


def kept_adapter(state: DrumState, adapter: PeCA) -> KeptAdapter:
    """`adapter`'s entry in `state.adapters` (now the most recently used); an adapter handed in without a file (a test's,
    or one whose entry left) gets an entry keyed by its identity, which the entry keeps alive (so it stays unique)."""
    for key, kept in state.adapters.items():
        if kept.adapter is adapter:
            return state.adapters.get(key)
    return state.adapters.put(("handed in", id(adapter)), KeptAdapter(None, adapter))


def model_patcher(state: DrumState, adapter: PeCA) -> comfy.model_patcher.ModelPatcher:
    """The adapter's ModelPatcher (made once, kept in its `state.adapters` entry): ComfyUI loads it to the text-encoder
    device and offloads it. ComfyUI's model management holds it weakly: it lives as long as that entry."""
    kept = kept_adapter(state, adapter)
    if kept.patcher is None:
        kept.patcher = comfy.model_patcher.ModelPatcher(
            ManagedAdapter(adapter),
            load_device=comfy.model_management.text_encoder_device(),
            offload_device=comfy.model_management.text_encoder_offload_device(),
        )
    return kept.patcher


def load_to_device(state: DrumState, adapters: Iterable[PeCA]) -> None:
    """Bring the adapters onto their load device through ComfyUI's model management (freeing other models if needed).

    Fully: the adapters' plain torch layers cannot run partially offloaded. ComfyUI may offload
    them again whenever another model needs the memory; they come back at the next use.
    """
    comfy.model_management.load_models_gpu([model_patcher(state, adapter) for adapter in adapters], force_full_load=True)


def load_with_clip(state: DrumState, opened: clip_bridge.OpenedClip, adapters: Iterable[PeCA], text: str = "") -> dict:
    """Bring the adapters in, THEN the opened CLIP, and return its encoders (clip_bridge.open_clip, checked again).

    In this order loading the CLIP may offload the adapters (they still run, on their offload device) but
    nothing unloads the CLIP before its encodes: unloading it restores its original weights (weight-patch
    LoRAs) and ejects its injections (bypass LoRAs). Call it right before encoding, with no other load in between
    (docs/comfyui.md "Memory order").
    """
    load_to_device(state, adapters)
    return clip_bridge.open_clip(state, opened.clip, text).encoders


def auto_files(slot: str) -> list[str]:
    """Drum-folder files named for the `slot` adapter (drum_core.weights.adapter_files: `L.safetensors`, then `*_L` / `*-L`)."""
    return adapter_files(folder_paths.get_filename_list(FOLDER), slot)


def auto_adapter(state: DrumState, slot: str) -> PeCA:
    """The first file of `auto_files(slot)` that really is a `slot` adapter."""
    rejected = []
    for file in auto_files(slot):
        try:
            adapter = load_adapter(state, file, slot)
        except (PeCAFormatError, AdapterMismatchError) as error:
            rejected.append(str(error))
            continue
        log.info("DrUM: auto-selected %s for the %s encoder", file, slot)
        return adapter
    raise AdapterMismatchError(
        f"no {slot} adapter for 'auto': put {slot}.safetensors (or *_{slot}.safetensors) into {folder_paths.get_folder_paths(FOLDER)}"
        + (f" (skipped: {'; '.join(rejected)})" if rejected else "")
    )


def resolve(state: DrumState, choice: AdapterChoice, encoder_names) -> dict[str, PeCA]:
    """The adapter of every encoder present (Personalizer names "l", "h", "g", "t5"); named errors."""
    adapters = {}
    for name in encoder_names:
        slot = ENCODER_ADAPTERS[name]
        value = choice.slots.get(slot, AUTO)
        if value == NONE:
            raise AdapterMismatchError(
                f"the CLIP has the {slot} text encoder but the PeCA Loader's {slot} slot is 'none': choose the {slot} adapter"
            )
        adapters[name] = auto_adapter(state, slot) if value == AUTO else value
    return adapters


def _slot_input(slot: str) -> io.Combo.Input:
    return io.Combo.Input(
        slot,
        options=[AUTO, NONE, *folder_paths.get_filename_list(FOLDER)],
        default=AUTO,
        tooltip=f"Adapter for the {ENCODER_TITLES[slot]} text encoder. 'auto': the file named {slot}.safetensors or *_{slot}.safetensors, "
        "used only when the model has this encoder; 'none': no adapter (an error if the model has this encoder).",
    )


class DrUMPeCALoader(CheckedNode):
    LISTED_ELSEWHERE = ADAPTER_NAMES  # files of the drum folders, checked by their headers

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
            inputs=[_slot_input(slot) for slot in ADAPTER_NAMES],
            outputs=[
                DrumPeCAType.Output(display_name="adapters", tooltip="The chosen adapters, matched to the encoders by the conditioner.")
            ],
        )

    @classmethod
    def input_error(cls, values: dict) -> str | None:
        for slot in ADAPTER_NAMES:
            value = values.get(slot)
            if value is None or value in (AUTO, NONE):  # None: linked, checked at execution
                continue
            try:  # the header only: on ComfyUI's server thread a tensor operation starts a second OpenMP team (docs/comfyui.md)
                check_slot(value, PeCA.check_file(adapter_path(value)), slot)
            except (OSError, PeCAFormatError, AdapterMismatchError) as error:
                return f"{slot} slot: {error}"
        return None

    @classmethod
    def execute(cls, L: str, H: str, bigG: str, T5: str) -> io.NodeOutput:
        cls.check_inputs(L=L, H=H, bigG=bigG, T5=T5)
        slots, files = {}, {}
        for slot, value in zip(ADAPTER_NAMES, (L, H, bigG, T5)):
            slots[slot] = value if value in (AUTO, NONE) else load_adapter(cls.state(), value, slot)
            files[slot] = value
        return io.NodeOutput(AdapterChoice(slots, files))


NODES = [DrUMPeCALoader]
