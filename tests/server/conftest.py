"""Server tier: one real ComfyUI (0.3.75 by default) for the session, the pack linked into it.

Tiny random checkpoints are generated once into .cache/test-models; everything the server
writes (images, log, inputs) lands under test-artifacts/server/.
"""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `support` package

from support.comfy_env import ARTIFACTS as TEST_ARTIFACTS  # noqa: E402
from support.comfy_env import ROOT, TEST_PACK  # noqa: E402
from support.server import ComfyServer  # noqa: E402
from support.test_models import CHECKPOINTS, checkpoint, diffusion_model  # noqa: E402
from support.tiny_models import tiny_adapter  # noqa: E402

ARTIFACTS = TEST_ARTIFACTS / "server"


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
    tiny_adapter("T5", seed=2).save(adapters / "T5.safetensors")  # FLUX and SD3
    extra = ARTIFACTS / "extra_model_paths.yaml"
    extra.write_text(f"drum_tests:\n    base_path: {adapters}\n    drum: .\n")
    (base / "input").mkdir()
    (base / "input" / "bad.json").write_text('[{"prompt": "fine"}, {"rating": 2}]')
    (base / "input" / "empty.txt").write_text("\n")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / TEST_PACK).symlink_to(ROOT / "tests" / "support" / "test_nodes", target_is_directory=True)
    with ComfyServer(base, extra) as running:
        yield running


@pytest.fixture(scope="session")
def dit_models(server):
    """The running server, with the tiny FLUX / SD3 diffusion models and the 16-channel VAE linked into its model folders."""
    for folder, model in (("diffusion_models", "flux"), ("diffusion_models", "sd3"), ("vae", "vae16")):
        target = server.base / "models" / folder
        target.mkdir(parents=True, exist_ok=True)
        (target / f"tiny_{model}.safetensors").symlink_to(diffusion_model(model))
    missing = {"DrUMTestTinyCLIP", "DrUMTestConditioningProbe"} - set(server.object_info())
    assert not missing, f"the test-only pack {TEST_PACK} did not load: {missing}\n{server.log_tail()}"
    return server
