"""Tiny random model files for the server and web tiers, built on first use into .cache/test-models."""

import os
import subprocess
import sys
from pathlib import Path

from .comfy_env import ROOT, comfy_dir

MODELS = ROOT / ".cache" / "test-models"
CHECKPOINTS = {"sd15": "tiny_sd15.safetensors", "sdxl": "tiny_sdxl.safetensors"}


def checkpoint(arch: str) -> Path:
    """The cached tiny checkpoint of `arch` ("sd15" | "sdxl"), built on first use."""
    path = MODELS / CHECKPOINTS[arch]
    if not path.is_file():
        script = ROOT / "tests" / "support" / "tiny_checkpoints.py"
        subprocess.run([sys.executable, str(script), "--comfy", str(comfy_dir()), "--arch", arch, "--out", str(path)], check=True)
    return path


def diffusion_model(model: str) -> Path:
    """The cached tiny FLUX / SD3 diffusion model or 16-channel VAE (tests/support/tiny_dit.py), built on first use."""
    path = MODELS / f"tiny_{model}.safetensors"
    if not path.is_file():
        env = dict(os.environ, DRUM_COMFY_DIR=str(comfy_dir()))
        command = [sys.executable, "-m", "support.tiny_dit", "--model", model, "--out", str(path)]
        subprocess.run(command, cwd=ROOT / "tests", env=env, check=True)
    return path
