"""Real ComfyUI for the tests: where its tree is, how to import it in-process, and the pack.

The tree comes from tools/bootstrap.sh (ComfyUI 0.3.75, git-ignored); `DRUM_COMFY_DIR`
points elsewhere. A missing tree FAILS the tests that need it, with the fix in the message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DRUM_TEST_ARTIFACTS", ROOT / "test-artifacts"))  # images, logs, screenshots
TEST_PACK = "DrUMTestNodes"  # tests/support/test_nodes linked into a test server's custom_nodes: test-only nodes
STUBS = Path(__file__).resolve().parent / "stubs"
PACKAGE = "comfyui_drum"  # the name the pack is imported under in-process


def node_module(name: str):
    """A module of the pack's nodes/ as the in-process ComfyUI imported it (`node_module("clip_bridge")`)."""
    return sys.modules[f"{PACKAGE}.nodes.{name}"]


def comfy_dir() -> Path:
    """The ComfyUI tree under test; raises with the fix when it is missing."""
    path = Path(os.environ.get("DRUM_COMFY_DIR", ROOT / ".cache" / "comfyui" / "ComfyUI"))
    if not (path / "main.py").is_file() or not (path / "comfy" / "sd.py").is_file():
        raise RuntimeError(f"no ComfyUI tree at {path} (DRUM_COMFY_DIR): run `bash tools/bootstrap.sh` to extract ComfyUI 0.3.75")
    return path


def import_comfy() -> Path:
    """Put ComfyUI (CPU only) and the torchvision stub on sys.path; import its core as main.py does."""
    path = comfy_dir()
    if str(STUBS) not in sys.path:
        from transformers.utils import is_torchvision_available

        is_torchvision_available()  # transformers caches the answer: let it see the real torchvision, never the stub
    for entry in (str(STUBS), str(path)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import utils.extra_config  # noqa: F401  (the top-level 'utils' package, before comfy/ is on sys.path)
        from comfy.cli_args import args

        args.cpu = True
        import comfy.model_management  # noqa: F401
        import folder_paths  # noqa: F401
    finally:
        sys.argv = argv
    return path


def load_pack():
    """Import the repository as ComfyUI does (a package from its __init__.py) and register its nodes."""
    import_comfy()
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    module = sys.modules[PACKAGE]
    extension = asyncio.run(module.comfy_entrypoint())
    return {node.GET_SCHEMA().node_id: node for node in asyncio.run(extension.get_node_list())}
