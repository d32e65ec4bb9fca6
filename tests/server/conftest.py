"""Server tier: one real ComfyUI (0.3.75 by default) for the session, the pack linked into it.

Tiny random checkpoints are generated once into .cache/test-models; everything the server
writes (images, log, inputs) lands under test-artifacts/server/.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `support` package

from support.comfy_env import ROOT, comfy_dir  # noqa: E402
from support.server import ComfyServer  # noqa: E402
from support.tiny_models import tiny_adapter  # noqa: E402

MODELS = ROOT / ".cache" / "test-models"
ARTIFACTS = ROOT / "test-artifacts" / "server"
CHECKPOINTS = {"sd15": "tiny_sd15.safetensors", "sdxl": "tiny_sdxl.safetensors"}


def checkpoint(arch: str) -> Path:
    """The cached tiny checkpoint of `arch`, built on first use."""
    path = MODELS / CHECKPOINTS[arch]
    if not path.is_file():
        script = ROOT / "tests" / "support" / "tiny_checkpoints.py"
        subprocess.run([sys.executable, str(script), "--comfy", str(comfy_dir()), "--arch", arch, "--out", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def server():
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    base = ARTIFACTS / "base"
    (base / "models" / "checkpoints").mkdir(parents=True)
    for arch, name in CHECKPOINTS.items():
        (base / "models" / "checkpoints" / name).symlink_to(checkpoint(arch))
    adapters = ARTIFACTS / "adapters"  # reached through extra_model_paths.yaml, not models/drum
    adapters.mkdir()
    for seed, name in enumerate(("L", "bigG")):
        tiny_adapter(name, seed=seed).save(adapters / f"{name}.safetensors")
    extra = ARTIFACTS / "extra_model_paths.yaml"
    extra.write_text(f"drum_tests:\n    base_path: {adapters}\n    drum: .\n")
    (base / "input").mkdir()
    shutil.copy(ROOT / "example_workflows" / "example_history.txt", base / "input")
    (base / "input" / "bad.json").write_text('[{"prompt": "fine"}, {"rating": 2}]')
    (base / "input" / "empty.txt").write_text("\n")
    with ComfyServer(base, extra) as running:
        yield running
