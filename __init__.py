"""ComfyUI-DrUM: ComfyUI's entry point (V3 extension).

ComfyUI imports this file as a package; the nodes (and through them ComfyUI) are imported
only when ComfyUI calls `comfy_entrypoint`, so `drum_core` stays importable without ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import extension

    return extension()
