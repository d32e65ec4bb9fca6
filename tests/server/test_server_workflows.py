"""The example workflows and malformed inputs in a real ComfyUI server (HTTP)."""

import copy
import json

import numpy as np
import pytest
from PIL import Image
from support.comfy_env import ROOT
from support.server import PACK_NAME, PromptRejected

pytestmark = pytest.mark.server

WORKFLOWS = ROOT / "example_workflows"
NODE_IDS = ["DrUMHistoryLoader", "DrUMCoresetSampler", "DrUMPeCALoader", "DrUMConditioner", "DrUMDegreeSlider", "DrUMProfilePreview"]
TINY = {"drum_sd15": "tiny_sd15.safetensors", "drum_alpha_sweep": "tiny_sd15.safetensors", "drum_sdxl": "tiny_sdxl.safetensors"}


def tiny_graph(name: str) -> dict:
    """An example workflow's API copy on the tiny checkpoint: 64x64 latents, 2 steps."""
    graph = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = TINY[name]
        elif node["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
            inputs.update(width=64, height=64)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = 2
    return graph


def node_of(graph: dict, class_type: str) -> dict:
    return next(node for node in graph.values() if node["class_type"] == class_type)


def combo_options(info: dict, node: str, name: str) -> list:
    kind, *options = info[node]["input"]["required"][name]
    return options[0]["options"] if kind == "COMBO" else kind


def test_pack_nodes_are_registered(server):
    info = server.object_info()
    missing = [node for node in NODE_IDS if node not in info]
    assert not missing, f"not registered: {missing}\n{server.log_tail()}"
    failed = [line for line in server.log_path.read_text().splitlines() if "IMPORT FAILED" in line and PACK_NAME in line]
    assert not failed, failed
    (server.base.parent / "object_info.json").write_text(json.dumps(info))  # input of tests/support/workflows.py
    for node in NODE_IDS:
        assert info[node]["category"] == "conditioning/DrUM" and info[node]["description"]
    assert {"L.safetensors", "bigG.safetensors"} <= set(combo_options(info, "DrUMPeCALoader", "L"))  # drum folder of extra_model_paths.yaml
    assert "example_history.txt" in combo_options(info, "DrUMHistoryLoader", "file")


@pytest.mark.parametrize("name, images", [("drum_sd15", 2), ("drum_alpha_sweep", 4), ("drum_sdxl", 1)])
def test_example_workflow_renders(server, name, images):
    entry = server.run(tiny_graph(name))
    assert entry.status == "success", entry.error or entry.messages
    saved = entry.images(server.base / "output")
    assert len(saved) == images
    for path in saved:
        pixels = np.asarray(Image.open(path))
        assert pixels.shape[2] == 3 and np.isfinite(pixels).all()
    if name == "drum_sd15":
        profile = next(p for p in saved if "profile" in p.name)
        assert Image.open(profile).size == (1024, 512)
    ui = next(out for out in entry.outputs.values() if "drum_conditioning" in out)
    assert ui["drum_conditioning"][0]["family"] == ("sdxl" if name == "drum_sdxl" else "sd1")


def run_expecting_error(server, graph: dict) -> str:
    """The node error a bad graph ends with: a validation rejection or an execution error."""
    try:
        entry = server.run(graph)
    except PromptRejected as rejected:
        return json.dumps(rejected.body)
    assert entry.status == "error", entry
    return f"{entry.error['node_type']}: {entry.error['exception_message']}"


def test_malformed_inputs_end_with_a_named_node_error_and_the_server_keeps_running(server):
    good = tiny_graph("drum_sd15")
    cases = {
        "bad history file": (("DrUMHistoryLoader", "file", "bad.json"), ["DrUMHistoryLoader", "bad.json", "line"]),
        "empty history file": (("DrUMHistoryLoader", "file", "empty.txt"), ["DrUMHistoryLoader", "empty.txt"]),
        "path outside the input folder": (("DrUMHistoryLoader", "file", "../secret.txt"), ["secret.txt"]),
        "adapter for the wrong encoder": (("DrUMPeCALoader", "L", "bigG.safetensors"), ["bigG.safetensors", "L slot"]),
        "missing adapter": (("DrUMPeCALoader", "L", "none"), ["DrUMConditioner", "L slot is 'none'"]),
    }
    for case, ((class_type, key, value), expected) in cases.items():
        graph = copy.deepcopy(good)
        node_of(graph, class_type)["inputs"][key] = value
        message = run_expecting_error(server, graph)
        assert all(part in message for part in expected), (case, message)
        assert server.alive(), case
    entry = server.run(good)
    assert entry.status == "success", entry.error


def test_empty_history_renders_the_plain_prompt(server):
    graph = tiny_graph("drum_sd15")
    for key in ("3", "12", "13"):  # no coreset, no profile: the loader feeds the conditioner
        del graph[key]
    graph["2"]["inputs"].update(file="none", text="")
    graph["5"]["inputs"]["history"] = ["2", 0]
    entry = server.run(graph)
    assert entry.status == "success", entry.error
    assert len(entry.images(server.base / "output")) == 1


def test_ui_workflows_match_their_api_copies(server):
    from support.workflows import ui_to_api

    info = server.object_info()
    names = sorted(path.stem for path in (WORKFLOWS / "api").glob("*.json"))
    assert names == sorted(path.stem for path in WORKFLOWS.glob("*.json"))
    for name in names:
        ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
        api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
        assert ui_to_api(ui, info) == api, name
