"""The ComfyUI node pack (V3 API). Imported only by ComfyUI, through the root `__init__.py`."""

from __future__ import annotations

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


def extension() -> DrUMExtension:
    adapters.register_folder()
    profiles.register_folder()
    return DrUMExtension()
