"""The conditioner's `relevant` and timestep range, and DrUM Profile Save / Load, in a real ComfyUI server.

Every graph is the SD1 example workflow on the tiny checkpoint (4 steps, no profile picture),
compared by its decoded pixels: a control that is documented to change the image must change
it, and its neutral setting must reproduce the old image bit for bit.
"""

import copy
import json

import numpy as np
import pytest
from PIL import Image
from support.comfy_env import ROOT
from support.server import PromptRejected
from support.workflows import tiny_template_graph

from drum_core.profiles import Profile

pytestmark = pytest.mark.server

CONDITIONER, SAMPLER, PROBE, PROFILE = "5", "8", "30", "31"


def base_graph() -> dict:
    """drum_sd15 on the tiny checkpoint, 4 steps, without the profile picture."""
    graph = tiny_template_graph("drum_sd15")
    for key in ("12", "13"):
        del graph[key]
    graph[SAMPLER]["inputs"]["steps"] = 4
    return graph


def render(server, graph: dict) -> np.ndarray:
    """The pixels [H, W, 3] of the graph's one saved image."""
    entry = server.run(graph)
    assert entry.status == "success", entry.error or entry.messages
    (path,) = entry.images(server.base / "output")
    pixels = np.asarray(Image.open(path)).astype(np.int16)
    assert pixels.std() > 1.0  # a real picture, not a flat one
    return pixels


def with_inputs(graph: dict, **inputs) -> dict:
    changed = copy.deepcopy(graph)
    changed[CONDITIONER]["inputs"].update(inputs)
    return changed


@pytest.fixture(scope="module")
def old_image(server):
    return render(server, base_graph())


def test_neutral_settings_reproduce_the_old_image(server, old_image):
    neutral = render(server, with_inputs(base_graph(), relevant=0, start_percent=0.0, end_percent=1.0))
    assert np.array_equal(neutral, old_image)


def test_relevant_changes_the_image(server, old_image):
    one = render(server, with_inputs(base_graph(), relevant=1))
    assert np.abs(one - old_image).max() > 0
    everyone = render(server, with_inputs(base_graph(), relevant=100))  # more than the history holds: all of it
    assert np.array_equal(everyone, old_image)


def test_a_timestep_range_is_rendered_as_comfyuis_own_range_nodes_render_it(server, old_image):
    ranged = render(server, with_inputs(base_graph(), start_percent=0.5, end_percent=1.0))
    assert np.abs(ranged - old_image).max() > 0
    native = base_graph()  # the same thing from ComfyUI's own nodes: personalized for 0.5-1, CLIP Text Encode for 0-0.5
    text = native[CONDITIONER]["inputs"]["text"]
    native.update(
        {
            "20": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": [CONDITIONER, 0], "start": 0.5, "end": 1.0}},
            "21": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
            "22": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["21", 0], "start": 0.0, "end": 0.5}},
            "23": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["20", 0], "conditioning_2": ["22", 0]}},
        }
    )
    native[SAMPLER]["inputs"]["positive"] = ["23", 0]
    assert np.array_equal(render(server, native), ranged)


def rejection(server, graph: dict) -> str:
    """The validation errors a graph is refused with, as text."""
    with pytest.raises(PromptRejected) as rejected:
        server.run(graph)
    return json.dumps(rejected.value.body)


def test_an_empty_range_is_refused_before_sampling(server):
    message = rejection(server, with_inputs(base_graph(), start_percent=0.7, end_percent=0.2))
    assert "DrUMConditioner" in message and "start_percent (0.7) must be below end_percent (0.2)" in message
    assert server.alive()


def probed(graph: dict) -> dict:
    """The graph with the test probe in front of the sampler's positive input."""
    graph[PROBE] = {"class_type": "DrUMTestConditioningProbe", "inputs": {"conditioning": [CONDITIONER, 0]}}
    graph[SAMPLER]["inputs"]["positive"] = [PROBE, 0]
    return graph


def test_a_saved_profile_loads_in_another_prompt_to_the_same_conditioning(server):
    saving = probed(base_graph())
    saving[PROFILE] = {"class_type": "DrUMProfileSave", "inputs": {"history": ["3", 0], "name": "server/taste", "clip": ["1", 1]}}
    entry = server.run(saving)
    assert entry.status == "success", entry.error
    assert entry.outputs[PROFILE]["drum_profile"][0]["file"] == "server/taste.safetensors"
    assert (server.base / "models" / "drum_profiles" / "server" / "taste.safetensors").is_file()
    (saved_image,) = entry.images(server.base / "output")
    loading = probed(base_graph())
    for key in ("2", "3"):  # no history file, no coreset: the profile alone
        del loading[key]
    loading[PROFILE] = {"class_type": "DrUMProfileLoad", "inputs": {"file": "server/taste.safetensors", "clip": ["1", 1]}}
    loading[CONDITIONER]["inputs"]["history"] = [PROFILE, 0]
    loaded = server.run(loading)
    assert loaded.status == "success", loaded.error
    assert loaded.outputs[PROBE]["drum_probe"] == entry.outputs[PROBE]["drum_probe"]
    saved = Profile.load(server.base / "models" / "drum_profiles" / "server" / "taste.safetensors")
    assert [p["prompt"] for p in loaded.outputs[PROFILE]["drum_picks"]] == saved.prompts and saved.picks
    (loaded_image,) = loaded.images(server.base / "output")
    assert np.array_equal(np.asarray(Image.open(loaded_image)), np.asarray(Image.open(saved_image)))


def test_bad_profile_names_and_files_are_named_errors(server):
    folder = server.base / "models" / "drum_profiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.safetensors").write_bytes(b"\x00" * 40)
    graph = base_graph()
    graph[PROFILE] = {"class_type": "DrUMProfileLoad", "inputs": {"file": "broken.safetensors", "clip": ["1", 1]}}
    graph[CONDITIONER]["inputs"]["history"] = [PROFILE, 0]
    message = rejection(server, graph)
    assert "broken.safetensors" in message and "not a readable safetensors file" in message
    saving = base_graph()
    saving[PROFILE] = {"class_type": "DrUMProfileSave", "inputs": {"history": ["3", 0], "name": "../../escape", "clip": ["1", 1]}}
    message = rejection(server, saving)
    assert "DrUMProfileSave" in message and "inside the drum_profiles folder" in message
    assert not (server.base / "escape.safetensors").exists() and server.alive()


def test_the_profile_nodes_are_registered_with_tooltips_and_help_pages(server):
    info = server.object_info()
    for node in ("DrUMProfileSave", "DrUMProfileLoad"):
        assert info[node]["category"] == "conditioning/DrUM" and info[node]["description"], node
        inputs = {**info[node]["input"]["required"], **info[node]["input"].get("optional", {})}
        assert all(options[-1].get("tooltip") for options in inputs.values()), node
        assert (ROOT / "web" / "docs" / f"{node}.md").is_file(), node
    assert info["DrUMProfileSave"]["output_node"] is True
    assert info["DrUMProfileLoad"]["output_name"] == ["coreset", "history"]
    conditioner = info["DrUMConditioner"]["input"]["optional"]
    assert conditioner["relevant"][1]["default"] == 0
    assert (conditioner["start_percent"][1]["default"], conditioner["end_percent"][1]["default"]) == (0.0, 1.0)
