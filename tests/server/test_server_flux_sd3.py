"""The FLUX and SD3 example workflows in a real ComfyUI server, on tiny random models.

The diffusion models and the 16-channel VAE are real files (tests/support/tiny_dit.py) loaded
by UNETLoader and VAELoader (support.workflows.tiny_template_graph). The text encoders cannot
be: ComfyUI builds T5-XXL at its full 4.76B parameters whatever a file holds, so the TEST-ONLY node DrUMTestTinyCLIP
(tests/support/test_nodes) stands in for DualCLIPLoader / the checkpoint's CLIP with a real
`comfy.sd.CLIP` of the family at shrunken depths. DrUMTestConditioningProbe, put in front of
the sampler's positive input, reports exactly what the sampler receives.
"""

import copy

import numpy as np
import pytest
from PIL import Image
from support.workflows import PROBE, TINY_CLIP, tiny_template_graph

pytestmark = pytest.mark.server

PROMPT_ENCODE = "104"  # beside the nodes tiny_template_graph adds (support.workflows)


def node_of(graph: dict, class_type: str) -> dict:
    return next(node for node in graph.values() if node["class_type"] == class_type)


def render(server, graph: dict) -> tuple[np.ndarray, dict, dict]:
    """(the one saved image [H, W, 3], the probe's report, the conditioner's UI entry) of a successful run."""
    entry = server.run(graph)
    assert entry.status == "success", entry.error or entry.messages
    saved = entry.images(server.base / "output")
    assert len(saved) == 1, saved
    pixels = np.asarray(Image.open(saved[0]))
    assert pixels.std() > 1, "a flat image: NaN or saturated latents"  # NaN latents are saved as black
    probe = entry.outputs[PROBE]["drum_probe"]
    assert len(probe) == 1, probe
    conditioner = next(out["drum_conditioning"][0] for out in entry.outputs.values() if "drum_conditioning" in out)
    return pixels, probe[0], conditioner


def test_flux_workflow_renders_personalized_conditioning(dit_models):
    server = dit_models
    graph = tiny_template_graph("drum_flux")
    pixels, probe, conditioner = render(server, graph)
    assert pixels.shape == (64, 64, 3)
    assert conditioner["family"] == "flux" and conditioner["degrees"] == [0.3]
    assert probe["tokens"] == [1, 256, 4096] and probe["pooled"] == [1, 768]  # T5 tokens, CLIP-L pooled
    assert probe["guidance"] == 3.5

    # The guidance set upstream of the conditioner (its optional input) must survive it; degree 0
    # must reach the sampler as other tokens and so another image (same seed, guidance and model).
    carried = copy.deepcopy(graph)
    conditioner_key = next(key for key, node in carried.items() if node["class_type"] == "DrUMConditioner")
    guidance_key = next(key for key, node in carried.items() if node["class_type"] == "FluxGuidance")
    text = carried[conditioner_key]["inputs"]["text"]
    carried[PROMPT_ENCODE] = {"class_type": "CLIPTextEncode", "inputs": {"clip": [TINY_CLIP, 0], "text": text}}
    carried[guidance_key]["inputs"]["conditioning"] = [PROMPT_ENCODE, 0]
    carried[conditioner_key]["inputs"].update(conditioning=[guidance_key, 0], degree=0.0)
    carried[PROBE]["inputs"]["conditioning"] = [conditioner_key, 0]
    other, carried_probe, _ = render(server, carried)
    assert carried_probe["guidance"] == 3.5 and "guidance" in carried_probe["keys"]
    assert carried_probe["tokens"] == [1, 256, 4096] and carried_probe["pooled"] == [1, 768]
    assert carried_probe["token_mean_abs"] != pytest.approx(probe["token_mean_abs"], rel=1e-6)
    assert not np.array_equal(pixels, other), "degree 0 and 0.3 gave the same image: the conditioning did not reach the sampler"


def test_sd3_workflow_renders_personalized_conditioning(dit_models):
    pixels, probe, conditioner = render(dit_models, tiny_template_graph("drum_sd3"))
    assert pixels.shape == (64, 64, 3)
    assert conditioner["family"] == "sd3"
    assert probe["tokens"] == [1, 77 + 256, 4096]  # (CLIP-L ⊕ CLIP-G padded to 4096) then T5 along the tokens
    assert probe["pooled"] == [1, 2048]  # CLIP-L ⊕ CLIP-G pooled
