"""The ComfyUI node pack (V3 API). Imported only by ComfyUI, through the root `__init__.py`."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from . import (
    adapters,
    conditioner,
    coreset,
    degree,
    history,
    history_check,
    history_tools,
    migrations,
    outputs_history,
    preview,
    profiles,
    ratings_route,
    taste,
)
from .state import DrumState


class DrUMExtension(ComfyExtension):
    """The pack as ComfyUI loads it: the owner of the pack's state (nodes/state.py), whose node classes are bound to it."""

    def __init__(self, state: DrumState) -> None:
        self.state = state
        self.nodes = [node.bound(state) for node in NODE_CLASSES]

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(self.nodes)


NODE_CLASSES = (  # the module classes (unbound); ComfyUI gets them bound to the extension's state
    *history.NODES,
    *outputs_history.NODES,
    *history_tools.NODES,
    *coreset.NODES,
    *adapters.NODES,
    *conditioner.NODES,
    *degree.NODES,
    *preview.NODES,
    *profiles.NODES,
    *taste.NODES,
)


def register_model_folder(folder: str) -> None:
    """models/<folder> (+ any `<folder>:` paths from extra_model_paths.yaml), listing .safetensors files only."""
    folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))
    paths, _extensions = folder_paths.folder_names_and_paths[folder]
    folder_paths.folder_names_and_paths[folder] = (paths, {".safetensors"})


def upgrade_queued_prompt(json_data: dict) -> dict:
    """ComfyUI on-prompt handler: an old API-format prompt upgraded by the registered migrations before validation."""
    if isinstance(json_data.get("prompt"), dict):
        json_data["prompt"] = migrations.upgrade_prompt(json_data["prompt"])
    return json_data


def register_migrations() -> None:
    """Upgrade queued prompts on the running server (none in-process without a server), once, while migrations exist."""
    from server import PromptServer

    server = getattr(PromptServer, "instance", None)
    handlers = getattr(server, "on_prompt_handlers", None)
    if migrations.MIGRATIONS and handlers is not None and upgrade_queued_prompt not in handlers:
        server.add_on_prompt_handler(upgrade_queued_prompt)


def watch_uploads(state: DrumState) -> None:
    """Add the History Loader's upload watch (of `state`'s file list) to the running server's middlewares (before it
    starts), once."""
    from server import PromptServer

    app = getattr(getattr(PromptServer, "instance", None), "app", None)
    if app is None or any(getattr(middleware, "drum_upload_watch", False) for middleware in app.middlewares):
        return
    try:
        app.middlewares.append(history.upload_watch(state.history_files))
    except RuntimeError:  # already started (frozen): the folders' mtimes still refresh the list
        logging.getLogger(__name__).info("DrUM: server already started, history file list refreshed by folder mtimes only")


def extension() -> DrUMExtension:
    register_model_folder(adapters.FOLDER)
    register_model_folder(profiles.FOLDER)
    register_migrations()
    ratings_route.register_routes()
    history_check.register_routes()
    state = DrumState.for_comfyui()
    watch_uploads(state)
    return DrUMExtension(state)
