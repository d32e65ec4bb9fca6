"""Your outputs as your history in the page, real Chromium, both renderers: the "DrUM Personalize" subgraph
blueprint (the pack's subgraphs/ folder) and the drum_my_outputs template's History from Outputs panel.

ComfyUI 0.3.75 serves custom nodes' subgraphs/*.json at /global_subgraphs and the frontend lists them in the
node library. A user drags it from there onto the canvas, puts it in ComfyUI's classic SD1.5 graph in place of the positive CLIP
Text Encode (checkpoint CLIP -> its clip, its CONDITIONING -> the sampler's positive), and the graph validates
and runs: inside, History from Outputs reads the image the graph made before, the Coreset Sampler picks from it
and the Conditioner personalizes the prompt.
"""

from __future__ import annotations

import secrets

import pytest
from comfy_page import load_workflow, nodes_of_type, panel_rows, run_graph, set_widgets
from support.workflows import api_to_ui

pytestmark = pytest.mark.web

BLUEPRINT = "DrUM Personalize"
PROMPT = f"a paper lantern festival over a river, {secrets.token_hex(3)}"  # fresh: no cached run answers for it


def sd15_graph(prefix: str) -> dict:
    """ComfyUI's classic default graph (SD1.5), on the tiny checkpoint, small and quick."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": PROMPT}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "text, watermark"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": 156680208700286,
                "steps": 2,
                "cfg": 8.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def test_the_blueprint_is_served_and_listed_in_the_node_library(page, server):
    listed = server.get("/global_subgraphs")
    assert [entry["name"] for entry in listed.values()] == [BLUEPRINT], listed
    page.get_by_role("button", name="Node Library (n)").click()
    page.get_by_placeholder("Search Nodes").fill("Personalize")
    page.get_by_role("treeitem", name=BLUEPRINT).wait_for()
    page.get_by_role("button", name="Node Library (n)").click()  # closed again


def test_the_blueprint_replaces_the_positive_text_encode_and_runs(page, server, renderer, page_errors):
    info = server.object_info()
    load_workflow(page, api_to_ui(sd15_graph(f"blueprint_{renderer}"), info))
    first = run_graph(page)
    assert first["type"] == "execution_success", first  # an image whose prompt is now in the output folder

    before = page.evaluate("() => window.app.graph.nodes.length")
    page.get_by_role("button", name="Node Library (n)").click()
    page.get_by_placeholder("Search Nodes").fill("Personalize")
    item = page.get_by_role("treeitem", name=BLUEPRINT)
    item.drag_to(page.locator("#graph-canvas"), target_position={"x": 700, "y": 860})  # onto the canvas, below the fitted graph
    page.wait_for_function("(count) => window.app.graph.nodes.length === count", arg=before + 1)
    page.get_by_role("button", name="Node Library (n)").click()
    placed = page.evaluate(
        """(text) => {
            const graph = window.app.graph;
            const node = graph.nodes.find((n) => n.isSubgraphNode?.() && n.title === "DrUM Personalize");
            const positive = graph.getNodeById(6), checkpoint = graph.getNodeById(4), sampler = graph.getNodeById(3);
            checkpoint.connect(1, node, node.inputs.findIndex((i) => i.name === "clip"));
            node.connect(0, sampler, sampler.inputs.findIndex((i) => i.name === "positive"));
            node.widgets.find((w) => w.name === "text").value = text;
            graph.remove(positive);
            return {
                id: Number(node.id),
                inputs: node.inputs.map((i) => [i.name, i.type]),
                outputs: node.outputs.map((o) => [o.name, o.type]),
                inner: node.subgraph.nodes.map((n) => n.type).sort(),
            };
        }""",
        PROMPT,
    )
    assert placed["inputs"] == [["clip", "CLIP"], ["text", "STRING"], ["degree", "FLOAT"]]
    assert placed["outputs"] == [["CONDITIONING", "CONDITIONING"]]
    assert placed["inner"] == ["DrUMConditioner", "DrUMCoresetSampler", "DrUMOutputsHistory", "DrUMPeCALoader"]

    second = run_graph(page)
    assert second["type"] == "execution_success", second
    prompt_id = second["detail"]["prompt_id"]
    entry = server.get(f"/history/{prompt_id}")[prompt_id]
    graph = entry["prompt"][2]
    by_type = {node["class_type"]: (key, node) for key, node in graph.items()}
    assert "CLIPTextEncode" in by_type and sum(node["class_type"] == "CLIPTextEncode" for node in graph.values()) == 1  # the negative
    conditioner_key, conditioner = by_type["DrUMConditioner"]
    assert conditioner["inputs"]["text"] == PROMPT and conditioner["inputs"]["degree"] == pytest.approx(0.3)
    assert graph["3"]["inputs"]["positive"] == [conditioner_key, 0]
    outputs = entry["outputs"]
    read = next(output["drum_outputs"][0] for output in outputs.values() if "drum_outputs" in output)
    assert read["newest"][0]["prompt"] == PROMPT  # the first run's image, read back from the output folder
    conditioning = next(output["drum_conditioning"][0] for output in outputs.values() if "drum_conditioning" in output)
    assert conditioning["family"] == "sd1" and conditioning["references"]
    assert [image["type"] for image in outputs["9"]["images"]] == ["output"]
    assert not page_errors


def test_the_outputs_template_runs_and_its_panel_shows_what_was_read(page, workflows, renderer):
    """After the runs above, the output folder holds images of PROMPT: the template's History from Outputs reads them and
    its panel says how many images it read and lists the newest prompts, PROMPT first."""
    load_workflow(page, workflows["drum_my_outputs"])
    tiny = {
        "CheckpointLoaderSimple": {"ckpt_name": "tiny_sd15.safetensors"},
        "EmptyLatentImage": {"width": 64, "height": 64},
        "KSampler": {"steps": 2},
        "SaveImage": {"filename_prefix": f"template_{renderer}"},
    }
    for node_type, values in tiny.items():
        (node,) = nodes_of_type(page, node_type)
        set_widgets(page, node["id"], values)
    (outputs,) = nodes_of_type(page, "DrUMOutputsHistory")
    assert [w["value"] for w in outputs["widgets"][:4]] == ["(all outputs)", 0.0, False, True]
    done = run_graph(page)
    assert done["type"] == "execution_success", done
    page.wait_for_function(
        "(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_outputs').element"
        ".querySelectorAll('.drum-prompt').length > 0",
        arg=outputs["id"],
    )
    shown = panel_rows(page, outputs["id"], "drum_outputs")
    assert shown["prompts"][0] == PROMPT and not shown["failed"], shown
    assert shown["summary"].startswith("(all outputs): ") and " images, " in shown["summary"], shown["summary"]
