"""Tiny random model files for the server and web tiers, built on first use into .cache/test-models.

A cached file is named by a key of everything its bytes follow from (build_key), so a change of the
initialiser, the builder, its arguments, ComfyUI or torch builds a new file and a stale one is never read.
The names ComfyUI sees (CHECKPOINTS, tiny_<model>.safetensors) are links the tiers make to these files.
"""

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from .comfy_env import ROOT, comfy_dir

MODELS = ROOT / ".cache" / "test-models"
CHECKPOINTS = {"sd15": "tiny_sd15.safetensors", "sdxl": "tiny_sdxl.safetensors"}  # the names the workflows load
SUPPORT = ROOT / "tests" / "support"


def init_rule() -> str:
    """The source of drum_core.tiny.randomize_constants (read from this checkout, not from what is imported)."""
    source = (ROOT / "drum_core" / "tiny.py").read_text(encoding="utf-8")
    found = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "randomize_constants"]
    if len(found) != 1:
        raise RuntimeError("drum_core/tiny.py: no randomize_constants, which the test models' cache key covers")
    return ast.get_source_segment(source, found[0])


def build_key(builder: str, *arguments: str) -> str:
    """12 hex digits of what a built file holds: the builder's source, tiny_checkpoints.py's (the initialiser), the rule
    that randomizes constants, the build arguments, and the ComfyUI and torch versions."""
    import torch

    parts = [(SUPPORT / name).read_text(encoding="utf-8") for name in sorted({"tiny_checkpoints.py", builder})]
    parts += [init_rule(), (comfy_dir() / "comfyui_version.py").read_text(encoding="utf-8"), torch.__version__, *arguments]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()[:12]


def build_env() -> dict:
    """The builders' environment: this checkout's drum_core first, whatever else is installed."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def checkpoint(arch: str) -> Path:
    """The cached tiny checkpoint of `arch` ("sd15" | "sdxl"), built on first use."""
    path = MODELS / f"tiny_{arch}-{build_key('tiny_checkpoints.py', arch)}.safetensors"
    if not path.is_file():
        script = SUPPORT / "tiny_checkpoints.py"
        command = [sys.executable, str(script), "--comfy", str(comfy_dir()), "--arch", arch, "--out", str(path)]
        subprocess.run(command, env=build_env(), check=True)
    return path


def diffusion_model(model: str) -> Path:
    """The cached tiny FLUX / SD3 diffusion model or 16-channel VAE (tests/support/tiny_dit.py), built on first use."""
    path = MODELS / f"tiny_{model}-{build_key('tiny_dit.py', model)}.safetensors"
    if not path.is_file():
        env = dict(build_env(), DRUM_COMFY_DIR=str(comfy_dir()))
        command = [sys.executable, "-m", "support.tiny_dit", "--model", model, "--out", str(path)]
        subprocess.run(command, cwd=ROOT / "tests", env=env, check=True)
    return path
