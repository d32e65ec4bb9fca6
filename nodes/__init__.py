"""The ComfyUI node pack (V3 API). Imported only by ComfyUI, through the root `__init__.py`."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from . import adapters, conditioner, coreset, degree, history, history_tools, preview, profiles


class DrUMExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            *history.NODES,
            *history_tools.NODES,
            *coreset.NODES,
            *adapters.NODES,
            *conditioner.NODES,
            *degree.NODES,
            *preview.NODES,
            *profiles.NODES,
        ]


def register_model_folder(folder: str) -> None:
    """models/<folder> (+ any `<folder>:` paths from extra_model_paths.yaml), listing .safetensors files only."""
    folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))
    paths, _extensions = folder_paths.folder_names_and_paths[folder]
    folder_paths.folder_names_and_paths[folder] = (paths, {".safetensors"})


def extension() -> DrUMExtension:
    register_model_folder(adapters.FOLDER)
    register_model_folder(profiles.FOLDER)
    return DrUMExtension()
