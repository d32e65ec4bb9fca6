"""ComfyUI-DrUM: ComfyUI's entry point (V3 extension).

ComfyUI imports this file as a package; the nodes (and through them ComfyUI) are imported
only when ComfyUI calls `comfy_entrypoint`, so `drum_core` stays importable without ComfyUI.

`drum_core` has one identity everywhere: the top-level package `drum_core`, as pip installs
it. Inside ComfyUI the pack registers its own copy under that name (never by putting the pack
folder on sys.path, whose `nodes/` would shadow ComfyUI's `nodes.py`).
"""

import importlib.util
import logging
import os
import sys

WEB_DIRECTORY = "./web"
_PACK = os.path.dirname(os.path.abspath(__file__))


def _register_drum_core() -> None:
    """Make `import drum_core` give this pack's copy (or one installed from this same folder)."""
    package = os.path.join(_PACK, "drum_core")
    loaded = sys.modules.get("drum_core")
    if loaded is not None:
        if os.path.dirname(os.path.abspath(loaded.__file__)) != package:
            logging.getLogger(__name__).warning("DrUM: using drum_core from %s, not the pack's own %s", loaded.__file__, package)
        return
    spec = importlib.util.spec_from_file_location("drum_core", os.path.join(package, "__init__.py"), submodule_search_locations=[package])
    module = importlib.util.module_from_spec(spec)
    sys.modules["drum_core"] = module
    spec.loader.exec_module(module)


async def comfy_entrypoint():
    _register_drum_core()
    from .nodes import extension

    return extension()
