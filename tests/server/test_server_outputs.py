"""Acceptance of "your ComfyUI is your history" (issue 20) in a real ComfyUI server.

Images are made by ComfyUI's own SaveImage from known prompts through several graph shapes (SD1
CLIPTextEncode, SDXL CLIPTextEncodeSDXL, a FLUX guider chain, a string primitive feeding the text,
the DrUM Conditioner), each with a negative prompt that must not come back, plus one run that only
previews (its prompt lives in the server's queue history alone). Then DrUM History from Outputs, in
the same server, and `drum history import` recover exactly those prompts, in time order.

The module runs its own server: the queue history must hold only this module's runs for
`include_queue` to have an exact answer.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time

import pytest
from support.comfy_env import ARTIFACTS, ROOT, TEST_PACK
from support.server import ComfyServer, PromptRejected
from support.test_models import CHECKPOINTS, checkpoint, diffusion_model
from support.tiny_models import tiny_adapter
from support.workflows import TINY_CHECKPOINTS, TINY_VAE_FILE

pytestmark = pytest.mark.server

FOLDER = "acceptance"  # SaveImage prefix folder: the images of this test
NEGATIVE = "blurry, watermark, never a positive prompt"
SIZE, STEPS = 64, 1


@pytest.fixture(scope="module")
def outputs_server():
    base = ARTIFACTS / "server-outputs" / "base"  # beside the session server's folder, which it empties at its start
    shutil.rmtree(base.parent, ignore_errors=True)
    (base / "models" / "checkpoints").mkdir(parents=True)
    for arch, name in CHECKPOINTS.items():
        (base / "models" / "checkpoints" / name).symlink_to(checkpoint(arch))
    for folder, model in (("diffusion_models", "flux"), ("vae", "vae16")):
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        (base / "models" / folder / f"tiny_{model}.safetensors").symlink_to(diffusion_model(model))
    (base / "models" / "drum").mkdir()
    tiny_adapter("L", seed=0).save(base / "models" / "drum" / "L.safetensors")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / TEST_PACK).symlink_to(ROOT / "tests" / "support" / "test_nodes", target_is_directory=True)
    with ComfyServer(base) as running:
        yield running


# ------------------------------------------------------------------ graph shapes
def checkpoint_graph(arch: str, positive: dict, prefix: str, negative_text: str = NEGATIVE) -> dict:
    """Checkpoint -> `positive` (nodes whose "P" node gives the positive conditioning) and a CLIPTextEncode negative
    -> KSampler -> VAEDecode -> SaveImage(prefix)."""
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_CHECKPOINTS[arch]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": negative_text}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "sampler": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["ckpt", 0],
                "seed": 7,
                "steps": STEPS,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["P", 0],
                "negative": ["neg", 0],
                "latent_image": ["latent", 0],
                "denoise": 1.0,
            },
        },
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": f"{FOLDER}/{prefix}"}},
    }
    graph.update(positive)
    return graph


def sd1(text: str) -> dict:
    return checkpoint_graph("sd15", {"P": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": text}}}, "sd1")


def sdxl(text: str) -> dict:
    sizes = {"width": SIZE, "height": SIZE, "crop_w": 0, "crop_h": 0, "target_width": SIZE, "target_height": SIZE}
    encode = {"clip": ["ckpt", 1], **sizes, "text_g": text, "text_l": text}
    return checkpoint_graph("sdxl", {"P": {"class_type": "CLIPTextEncodeSDXL", "inputs": encode}}, "sdxl")


def primitive(text: str) -> dict:
    positive = {
        "string": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": text}},
        "P": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ["string", 0]}},
    }
    return checkpoint_graph("sd15", positive, "primitive")


def drum_conditioner(text: str) -> dict:
    positive = {
        "loader": {"class_type": "DrUMHistoryLoader", "inputs": {"file": "none", "text": "a box prompt that is not a positive\t5\n"}},
        "adapters": {"class_type": "DrUMPeCALoader", "inputs": {"L": "auto", "H": "auto", "bigG": "auto", "T5": "auto"}},
        "P": {
            "class_type": "DrUMConditioner",
            "inputs": {
                "clip": ["ckpt", 1],
                "adapters": ["adapters", 0],
                "history": ["loader", 0],
                "text": text,
                "degree": 0.3,
                "relevant": 0,
                "start_percent": 0.0,
                "end_percent": 1.0,
            },
        },
    }
    return checkpoint_graph("sd15", positive, "drum")


def flux(text: str) -> dict:
    """The FLUX guider chain: CLIPTextEncode -> FluxGuidance -> BasicGuider -> SamplerCustomAdvanced."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_flux.safetensors", "weight_dtype": "default"}},
        "clip": {"class_type": "DrUMTestTinyCLIP", "inputs": {"family": "flux", "seed": 0}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": TINY_VAE_FILE}},
        "encode": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": text}},
        "guidance": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["encode", 0], "guidance": 3.5}},
        "guider": {"class_type": "BasicGuider", "inputs": {"model": ["unet", 0], "conditioning": ["guidance", 0]}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["unet", 0], "scheduler": "simple", "steps": STEPS, "denoise": 1.0}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "sample": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["noise", 0],
                "guider": ["guider", 0],
                "sampler": ["select", 0],
                "sigmas": ["sigmas", 0],
                "latent_image": ["latent", 0],
            },
        },
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": f"{FOLDER}/flux"}},
    }


def preview_only(text: str) -> dict:
    """An SD1 run that saves nothing: PreviewImage writes to the temp folder, so only the queue history knows it."""
    graph = sd1(text)
    graph["save"] = {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}}
    return graph


# (shape, prompt): the runs, in this order
RUNS = [
    (sd1, "a red fox in fresh snow, morning light"),
    (sdxl, "a glass greenhouse full of orchids, wide angle"),
    (preview_only, "a preview of a paper boat on a pond"),
    (flux, "a neon street market in the rain at night"),
    (primitive, "an old map of an imaginary island, sepia ink"),
    (drum_conditioner, "a lighthouse on a cliff at dusk, oil painting"),
]
SAVED = [text for shape, text in RUNS if shape is not preview_only]


def outputs_graph(folder: str, include_queue: bool, dedupe: bool = False, since_days: float = 0.0) -> dict:
    return {
        "outputs": {
            "class_type": "DrUMOutputsHistory",
            "inputs": {"folder": folder, "since_days": since_days, "dedupe": dedupe, "include_queue": include_queue},
        },
        "probe": {"class_type": "DrUMTestHistoryProbe", "inputs": {"history": ["outputs", 0]}},
    }


def read_history(server, **options) -> tuple[dict, dict]:
    """(the probe's report of the node's history, the node's panel)."""
    entry = server.run(outputs_graph(**options))
    assert entry.status == "success", entry.error or entry.messages
    return entry.outputs["probe"]["drum_history_probe"][0], entry.outputs["outputs"]["drum_outputs"][0]


@pytest.fixture(scope="module")
def generated(outputs_server):
    """The runs of RUNS, one after the other (their images' modification times follow the order)."""
    server = outputs_server
    for shape, text in RUNS:
        entry = server.run(shape(text))
        assert entry.status == "success", (shape.__name__, entry.error or entry.messages)
        saved = entry.images(server.base / "output")
        assert len(saved) == (0 if shape is preview_only else 1), (shape.__name__, saved)
        time.sleep(0.05)  # distinct modification times even on coarse file systems
    return server


def test_the_node_recovers_exactly_the_saved_prompts_in_time_order(generated):
    server = generated
    kind, options = server.object_info()["DrUMOutputsHistory"]["input"]["required"]["folder"]
    assert kind == "COMBO" and options["options"][0] == "(all outputs)" and FOLDER in options["options"]  # listed once made
    report, panel = read_history(server, folder=FOLDER, include_queue=False)
    assert report["prompts"] == SAVED
    assert report["timestamps"] == sorted(report["timestamps"]) and len(set(report["timestamps"])) == len(SAVED)
    assert report["intensities"] == [1.0] * len(SAVED)
    assert panel["read"] == len(SAVED) and panel["count"] == len(SAVED) and panel["queue"] == 0
    assert panel["skipped"] == {}
    assert [row["prompt"] for row in panel["newest"]] == SAVED[::-1]  # newest first


def test_include_queue_adds_the_runs_that_saved_no_image_at_their_time(generated):
    server = generated
    report, panel = read_history(server, folder=FOLDER, include_queue=True)
    assert report["prompts"] == [text for _shape, text in RUNS]
    assert report["timestamps"] == sorted(report["timestamps"])
    assert panel["queue"] == 1 and panel["read"] == len(SAVED)


def test_the_root_and_dedupe(generated):
    server = generated
    twice = sd1(RUNS[0][1])  # the first prompt drawn a second time, saved beside the folder
    twice["save"]["inputs"]["filename_prefix"] = "elsewhere/sd1"
    again = server.run(twice)
    assert again.status == "success", again.error
    report, _ = read_history(server, folder="(all outputs)", include_queue=False)
    assert report["prompts"] == [*SAVED, RUNS[0][1]]
    merged, _ = read_history(server, folder="(all outputs)", include_queue=False, dedupe=True)
    assert sorted(merged["prompts"]) == sorted(SAVED)
    assert merged["intensities"][merged["prompts"].index(RUNS[0][1])] == 2.0
    (server.base / "output" / FOLDER / "not_an_image.png").write_bytes(b"not a png at all")
    _, panel = read_history(server, folder=FOLDER, include_queue=False)  # the folder changed: the node runs again
    assert sum(panel["skipped"].values()) == 1 and panel["count"] == len(SAVED), panel
    (server.base / "output" / FOLDER / "not_an_image.png").unlink()


def test_ratings_clicked_on_the_page_rate_the_images(generated):
    """A like on one image and a dislike on another (POST /drum/ratings, what the page's buttons send) reach the
    history's ratings, and the node runs again because the ratings file changed."""
    server = generated
    images = sorted((server.base / "output" / FOLDER).glob("*.png"), key=lambda path: path.stat().st_mtime)
    liked, disliked = images[0], images[-1]
    for image, rating in ((liked, "like"), (disliked, "dislike")):
        server.post("/drum/ratings", {"image": {"filename": image.name, "subfolder": FOLDER, "type": "output"}, "rating": rating})
    report, _ = read_history(server, folder=FOLDER, include_queue=False)
    assert report["prompts"] == SAVED
    assert report["ratings"] == [5.0, None, None, None, 1.0]
    assert report["intensities"] == [5.0, 1.0, 1.0, 1.0, 1.0]  # a rated record's intensity is its rating
    for image in (liked, disliked):
        server.post("/drum/ratings", {"image": {"filename": image.name, "subfolder": FOLDER, "type": "output"}, "rating": "clear"})
    report, _ = read_history(server, folder=FOLDER, include_queue=False)
    assert report["ratings"] is None


def test_a_missing_folder_is_a_named_node_error(generated):
    with pytest.raises(PromptRejected) as rejected:
        generated.run(outputs_graph(folder="no_such_folder", include_queue=False))
    assert "DrUMOutputsHistory" in str(rejected.value.body) and "no_such_folder" in str(rejected.value.body)
    assert generated.alive()


def test_the_cli_recovers_the_same_prompts_in_time_order(generated, tmp_path):
    out = tmp_path / "history.csv"
    command = [sys.executable, "-m", "drum_core.cli", "history", "import", str(generated.base / "output" / FOLDER), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["prompt"] for row in rows] == SAVED
    times = [float(row["timestamp"]) for row in rows]
    assert times == sorted(times)
    assert f"{len(SAVED)} prompts from {len(SAVED)} images read (none skipped)" in done.stdout, done.stdout
