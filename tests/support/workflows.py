"""UI-format (litegraph) workflows <-> API-format graphs, using a server's /object_info; tiny test runs of them.

    python tests/support/workflows.py --object-info info.json   # writes example_workflows/<title>.json (TITLES)
                                                                 # from example_workflows/api/<slug>.json,
                                                                 # and the pack's subgraphs/<name>.json (BLUEPRINTS)

The committed UI files (the templates ComfyUI lists) are made from the API copies; the server
tier converts them back and asserts equality, so the two formats never drift apart. Widget
values follow /object_info's input order; an INT with control_after_generate (a seed) carries
one extra value ("fixed"). A template's MarkdownNote (UI only: the API format has no notes) is
kept when its UI file is rewritten; widget inputs an API copy lacks get the node's default.

A template is named by its slug (`drum_sd15`) in code, tests and its API copy; its UI file and thumbnail carry its
title (`TITLES`, `ui_path`), which is what the template browser shows.
`tiny_template_graph(name)` is a template's API copy set up for the tests' tiny models.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[2] / "example_workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTE_TYPES = ("MarkdownNote", "Note")  # frontend-only nodes: not in /object_info, never in the API format
# Layout (graph units, px at zoom 1). Each node is sized to its content as the Vue "Nodes 2.0" renderer draws it (it
# grows a node to its content; the classic canvas only to computeSize, which is smaller): NODE_CHROME + rows of slots,
# widgets and text boxes + what the web extension adds (PAGE_WIDGETS: web/js/drum.js, web/js/styles.js); the constants
# were read off every template's nodes in Chromium on frontend 1.58.1 (a node's height there, title bar included, is at
# most this). The nodes then flow like a newspaper's columns (`flow_layout`): top to bottom, then the next column to the
# right, every wire going right or down, with the column height that lets Fit View show the whole graph largest in a
# 16:9 window: at or above the zoom where the canvas still draws text (docs/comfyui.md). tests/web/test_templates.py
# checks that zoom; tests/web/test_panels.py that no two nodes overlap.
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's pos is the top of its body, its title bar above
NODE_CHROME, SLOT_HEIGHT, WIDGET_HEIGHT, TEXT_HEIGHT, MODEL_FILE_HEIGHT, IMAGE_HEIGHT = 72, 17, 28, 56, 8, 120
COLUMN_GAP, ROW_GAP = 40, 30
NODE_WIDTH, WIDE_NODE_WIDTH = 270, 330
VIEW_ASPECT = 16 / 9  # the window Fit View fills: tests/web/test_templates.py VIEWPORTS
PAGE_WIDGETS = {  # height of what the web extension adds, by node type
    "DrUMHistoryLoader": 30 + 175,  # upload button, history panel
    "DrUMOutputsHistory": 175,
    "DrUMHistoryMix": 175,
    "DrUMHistorySplit": 175,
    "DrUMCoresetSampler": 175,
    "DrUMProfileLoad": 175,
    "DrUMProfileSave": 175,
    "DrUMConditioner": 64 + 175,  # degree slider, references panel
    "DrUMDegreeSlider": 64,
    "DrUMTasteCheck": 175,  # the per-degree table
    "DrUMProfilePreview": 295,  # the profile map
}
IMAGE_NODES = ("SaveImage", "PreviewImage", "SaveAnimatedWEBP")
# Where the page's missing-models dialog (frontend: properties.models of a node whose widget holds that file name, and
# the workflow's own "models" list) offers to download a template's model files from: file -> (url, models folder).
MODEL_FILES = {
    "v1-5-pruned-emaonly-fp16.safetensors": (
        "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors",
        "checkpoints",
    ),
    "sd_xl_base_1.0.safetensors": (
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        "checkpoints",
    ),
    "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors": (
        "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors",
        "checkpoints",
    ),
    "flux1-dev.safetensors": ("https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"),
    "clip_l.safetensors": ("https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders"),
    "t5xxl_fp16.safetensors": (
        "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        "text_encoders",
    ),
    "ae.safetensors": ("https://huggingface.co/black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors", "vae"),
    "Chroma1-HD.safetensors": ("https://huggingface.co/lodestones/Chroma1-HD/resolve/main/Chroma1-HD.safetensors", "diffusion_models"),
    "ltx-video-2b-v0.9.5.safetensors": (
        "https://huggingface.co/Lightricks/LTX-Video/resolve/main/ltx-video-2b-v0.9.5.safetensors",
        "checkpoints",
    ),
}
ADAPTER_URL = "https://huggingface.co/Burf/DrUM/resolve/main/weight/{name}.safetensors"  # drum_core/weights.py: HUB_REPO, HUB_FOLDER
FAMILY_ADAPTERS = {  # by template_family
    "sd15": ["L"],
    "sdxl": ["L", "bigG"],
    "sd3": ["L", "bigG", "T5"],
    "flux": ["L", "T5"],
    "pixart": ["T5"],
    "ltxv": ["T5"],
}


def model_entries(names) -> list[dict]:
    """properties.models entries {name, url, directory} of the model files among `names`."""
    return [{"name": name, "url": MODEL_FILES[name][0], "directory": MODEL_FILES[name][1]} for name in names if name in MODEL_FILES]


def adapter_entries(family: str) -> list[dict]:
    """{name, url, directory} of the DrUM adapter files a template of `family` needs (models/drum)."""
    return [{"name": f"{name}.safetensors", "url": ADAPTER_URL.format(name=name), "directory": "drum"} for name in FAMILY_ADAPTERS[family]]


NOTE_WIDTH, NOTE_LINE, NOTE_CHARS_PER_LINE = 360, 15, 52  # the Vue renderer's note: a line of its text, wrapped


def note_size(text: str) -> list[int]:
    """[width, height] of a MarkdownNote that shows `text` whole in the Vue renderer (it grows a note to its text)."""
    lines = sum(1 + len(line) // NOTE_CHARS_PER_LINE for line in text.splitlines())
    return [NOTE_WIDTH, 20 + NOTE_LINE * lines]


def ordered_inputs(spec: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of a node's inputs in the order the UI shows them."""
    order = spec.get("input_order", {})
    result = []
    for section in ("required", "optional"):
        inputs = spec["input"].get(section, {})
        for name in order.get(section, list(inputs)):
            kind, *options = inputs[name]
            result.append((name, "COMBO" if isinstance(kind, list) else kind, options[0] if options else {}))
    return result


def is_widget(kind: str, options: dict) -> bool:
    return kind in WIDGET_TYPES and not options.get("forceInput")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API graph {id: {class_type, inputs}} of a UI workflow."""
    links = {link[0]: link for link in workflow["links"]}
    graph = {}
    for node in workflow["nodes"]:
        if node["type"] in NOTE_TYPES:
            continue
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values", []))
        inputs = {}
        for name, kind, options in ordered_inputs(object_info[node["type"]]):
            if is_widget(kind, options):
                value = next(values)
                if options.get("control_after_generate"):
                    next(values)
                inputs[name] = value
            if name in linked:
                _id, origin, slot, *_ = links[linked[name]]
                inputs[name] = [str(origin), slot]
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


def _sources(node: dict) -> list[str]:
    """The keys of the nodes linked into an API-format `node`'s inputs (in input order, repeated per link)."""
    return [value[0] for value in node["inputs"].values() if isinstance(value, list)]


def _depths(graph: dict) -> dict[str, int]:
    """Column of each node: 1 + the deepest node feeding it."""
    depths: dict[str, int] = {}

    def depth(key: str) -> int:
        if key not in depths:
            depths[key] = 1 + max((depth(s) for s in _sources(graph[key])), default=-1)
        return depths[key]

    for key in graph:
        depth(key)
    return depths


def template_note(workflow: dict) -> str | None:
    """The text of a UI workflow's MarkdownNote, if it has one."""
    return next((node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "MarkdownNote"), None)


def with_defaults(graph: dict, object_info: dict) -> dict:
    """The API graph with every widget input it lacks set to the node's default (inputs added to a node later)."""
    for node in graph.values():
        for name, kind, options in ordered_inputs(object_info[node["class_type"]]):
            if is_widget(kind, options) and name not in node["inputs"] and "default" in options:
                node["inputs"][name] = options["default"]
    return graph


def node_size(class_type: str, spec: dict, linked: int, model_files: int = 0) -> list[int]:
    """[width, height] of a node of `class_type` (height below the title bar) that holds its content as the Vue renderer
    draws it: its chrome, slot rows, widgets (a multiline text box taller; `model_files` of them name a model file and
    get the missing-file mark), the web extension's widgets, an image node's ratings row and room for a picture."""
    inputs = ordered_inputs(spec)
    widgets = [(kind, options) for _name, kind, options in inputs if is_widget(kind, options)]
    slots = max(len(inputs) - len(widgets) + linked, len(spec["output"]))
    text = sum(1 for kind, options in widgets if kind == "STRING" and options.get("multiline"))
    seeds = sum(1 for _kind, options in widgets if options.get("control_after_generate"))
    height = NODE_CHROME - TITLE_HEIGHT + SLOT_HEIGHT * slots + WIDGET_HEIGHT * (len(widgets) - text + seeds) + TEXT_HEIGHT * text
    height += MODEL_FILE_HEIGHT * model_files + PAGE_WIDGETS.get(class_type, 0)
    if class_type in IMAGE_NODES:
        height += WIDGET_HEIGHT + IMAGE_HEIGHT
    wide = text or class_type in PAGE_WIDGETS or class_type in IMAGE_NODES
    return [WIDE_NODE_WIDTH if wide else NODE_WIDTH, height]


def _columns(graph: dict) -> dict[str, int]:
    """Column of each node: its depth, except that a node with no inputs (a loader, an empty latent) sits in the column
    just before its first consumer: no long wire from the far left."""
    depths = _depths(graph)
    consumers: dict[str, list[str]] = {}
    for key, node in graph.items():
        for source in _sources(node):
            consumers.setdefault(source, []).append(key)
    columns = dict(depths)
    for key, node in graph.items():
        if not _sources(node) and consumers.get(key):
            columns[key] = min(depths[c] for c in consumers[key]) - 1
    return columns


def _flow(nodes: list[dict], limit: float) -> list[tuple[float, float]]:
    """Top-left corners (title bar included) of `nodes` flowed into columns no taller than `limit` (a node taller than
    that has a column of its own). An image node ends its column: it grows with the pictures of a run."""
    corners, x, y, width, ended = [], 0.0, 0.0, 0.0, False
    for node in nodes:
        height = TITLE_HEIGHT + node["size"][1]
        if y > 0 and (ended or y + height > limit):
            x, y, width = x + width + COLUMN_GAP, 0.0, 0.0
        corners.append((x, y))
        y += height + ROW_GAP
        width = max(width, node["size"][0])
        ended = node["type"] in IMAGE_NODES
    return corners


def flow_layout(nodes: list[dict], aspect: float = VIEW_ASPECT) -> None:
    """Places `nodes` (in reading order: each after every node that feeds it) like a newspaper's columns: top to bottom,
    then the next column to the right, so every wire goes right or down. Of the column heights, the one whose layout
    Fit View shows largest in a window of that `aspect` (width / height); the tallest such on a tie."""
    heights = [TITLE_HEIGHT + node["size"][1] for node in nodes]

    def zoom(limit: float) -> float:  # the scale Fit View picks, up to a constant (its bounds pad the nodes by 10)
        corners = _flow(nodes, limit)
        right = max(x + node["size"][0] for (x, _y), node in zip(corners, nodes, strict=True))
        bottom = max(y + height for (_x, y), height in zip(corners, heights, strict=True))
        return min(aspect / (right + 20), 1 / (bottom + 20))

    limits = range(int(max(heights)), int(sum(heights) + ROW_GAP * len(heights)) + 10, 10)
    best = max(limits, key=lambda limit: (round(zoom(limit), 9), limit))
    for node, (x, y) in zip(nodes, _flow(nodes, best), strict=True):
        node["pos"] = [40 + x, 40 + y + TITLE_HEIGHT]


def api_to_ui(graph: dict, object_info: dict, note: str | None = None, title: str | None = None) -> dict:
    """A UI workflow for an API graph: nodes in reading order (by _columns: each after the nodes that feed it), each sized
    to its content (node_size), flowed into columns (flow_layout); `note`, as a MarkdownNote titled `title`, first."""
    columns = {key: column + (note is not None) for key, column in _columns(graph).items()}
    nodes, links = [], []
    outputs: dict[tuple[str, int], list[int]] = {}
    for key, node in graph.items():
        spec = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, kind, options in ordered_inputs(spec):
            value = node["inputs"].get(name)
            linked = isinstance(value, list)
            if is_widget(kind, options):
                widgets.append(options.get("default") if linked or value is None else value)
                if options.get("control_after_generate"):
                    widgets.append("fixed")
            if linked:
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(key), len(inputs), kind])
                outputs.setdefault((value[0], value[1]), []).append(link_id)
                entry = {"name": name, "type": kind, "link": link_id}
                if is_widget(kind, options):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif not is_widget(kind, options) and name in spec["input"].get("required", {}):
                inputs.append({"name": name, "type": kind, "link": None})
        linked_widgets = sum(1 for entry in inputs if "widget" in entry)
        properties: dict = {"Node name for S&R": node["class_type"]}
        files = model_entries(value for value in widgets if isinstance(value, str))  # model files its widgets name
        models = files
        if node["class_type"] == "DrUMPeCALoader":
            models = adapter_entries(template_family(graph))  # its widgets say "auto": the frontend reads these from "models" below
        if models:
            properties["models"] = models
        nodes.append(
            {
                "id": int(key),
                "type": node["class_type"],
                "pos": [0, 0],
                "size": node_size(node["class_type"], spec, linked_widgets, len(files)),
                "flags": {},
                "order": 0,
                "mode": 0,
                "inputs": inputs,
                "outputs": [],
                "properties": properties,
                "widgets_values": widgets,
            }
        )
    for node in nodes:
        spec = object_info[node["type"]]
        names = spec.get("output_name", spec["output"])
        node["outputs"] = [
            {"name": name, "type": kind, "links": outputs.get((str(node["id"]), slot), []), "slot_index": slot}
            for slot, (name, kind) in enumerate(zip(names, spec["output"]))
        ]
    # reading order: by column; in a column, a node with no inputs (moved there by _columns) last, next to its consumer
    for order, key in enumerate(sorted(graph, key=lambda k: (columns[k], not _sources(graph[k]), int(k)))):
        next(n for n in nodes if n["id"] == int(key))["order"] = order
    if note is not None:
        note_node = {
            "id": max(int(k) for k in graph) + 1,
            "type": "MarkdownNote",
            "pos": [0, 0],
            "size": note_size(note),
            "flags": {},
            "order": len(nodes),
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": [note],
            "color": "#432",
            "bgcolor": "#653",
        }
        if title:
            note_node["title"] = title
        nodes.append(note_node)
        columns[str(note_node["id"])] = 0
    flow_layout(sorted(nodes, key=lambda n: (columns[str(n["id"])], n["order"])))
    workflow = {
        "last_node_id": max(node["id"] for node in nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }
    if any(node["type"] == "DrUMPeCALoader" for node in nodes):
        workflow["models"] = adapter_entries(template_family(graph))
    return workflow


# ------------------------------------------------------------------ tiny test runs
TINY_CHECKPOINTS = {"sd15": "tiny_sd15.safetensors", "sdxl": "tiny_sdxl.safetensors"}  # support.test_models.CHECKPOINTS
TEXT_ENCODER_LOADERS = ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader")
TINY_CLIP, TINY_VAE, PROBE = "101", "102", "103"  # ids of the nodes tiny_dit_graph adds
TINY_VAE_FILE = "tiny_vae16.safetensors"
# Text-encoder loader types (CLIPLoader `type`) of the families the tests have no tiny diffusion model for: their
# templates run only their DrUM part (drum_part_graph), on DrUMTestTinyCLIP of that family. Chroma is PixArt's family.
DRUM_PART_FAMILIES = {"chroma": "pixart", "pixart": "pixart", "ltxv": "ltxv"}


def template_family(graph: dict) -> str:
    """ "sd15", "sdxl", "sd3", "flux", "pixart" (Chroma too) or "ltxv": which tiny models a template's API graph runs
    on (read off its loaders)."""
    kinds = {node["class_type"] for node in graph.values()}
    loader_types = {node["inputs"].get("type") for node in graph.values() if node["class_type"] in TEXT_ENCODER_LOADERS}
    for loader_type, family in DRUM_PART_FAMILIES.items():
        if loader_type in loader_types:
            return family
    checkpoints = [node["inputs"]["ckpt_name"].lower() for node in graph.values() if node["class_type"] == "CheckpointLoaderSimple"]
    if "FluxGuidance" in kinds or any(
        node["inputs"].get("type") == "flux" for node in graph.values() if node["class_type"] in TEXT_ENCODER_LOADERS
    ):
        return "flux"
    if "EmptySD3LatentImage" in kinds or any("sd3" in name for name in checkpoints):
        return "sd3"
    return "sdxl" if any("xl" in name for name in checkpoints) else "sd15"


def _small_and_quick(graph: dict) -> None:
    """64x64 latents, 2 sampling steps."""
    for node in graph.values():
        if node["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
            node["inputs"].update(width=64, height=64)
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2


def tiny_checkpoint_graph(graph: dict, family: str) -> dict:
    """An SD1/SDXL API graph on the tiny checkpoint of `family`, small and quick."""
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = TINY_CHECKPOINTS[family]
    _small_and_quick(graph)
    return graph


def tiny_dit_graph(graph: dict, family: str) -> dict:
    """A FLUX / SD3 API graph on the tiny models: the TEST-ONLY DrUMTestTinyCLIP for the text-encoder loaders, tiny
    diffusion model and VAE files, small and quick, and the probe (DrUMTestConditioningProbe) in front of the
    sampler's positive input."""
    replaced = {}  # (node, output slot) of a removed loader -> its stand-in
    for key, node in list(graph.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            graph[key] = {"class_type": "UNETLoader", "inputs": {"unet_name": f"tiny_{family}.safetensors", "weight_dtype": "default"}}
            replaced.update({(key, 1): [TINY_CLIP, 0], (key, 2): [TINY_VAE, 0]})
        elif kind in TEXT_ENCODER_LOADERS or kind == "VAELoader":
            del graph[key]
            replaced[(key, 0)] = [TINY_VAE, 0] if kind == "VAELoader" else [TINY_CLIP, 0]
        elif kind == "UNETLoader":
            inputs["unet_name"] = f"tiny_{family}.safetensors"
    _small_and_quick(graph)
    for node in graph.values():
        for input_name, value in node["inputs"].items():
            if isinstance(value, list) and tuple(value) in replaced:
                node["inputs"][input_name] = replaced[tuple(value)]
    graph[TINY_CLIP] = {"class_type": "DrUMTestTinyCLIP", "inputs": {"family": family, "seed": 0}}
    graph[TINY_VAE] = {"class_type": "VAELoader", "inputs": {"vae_name": TINY_VAE_FILE}}
    sampler = next(node for node in graph.values() if node["class_type"] == "KSampler")["inputs"]
    graph[PROBE] = {"class_type": "DrUMTestConditioningProbe", "inputs": {"conditioning": sampler["positive"]}}
    sampler["positive"] = [PROBE, 0]
    return graph


SAMPLERS = ("KSampler", "SamplerCustom")


def drum_part_graph(graph: dict, family: str) -> dict:
    """The DrUM part of a template of a family without a tiny diffusion model: every node the sampler's positive
    input depends on, with DrUMTestTinyCLIP of `family` in place of the text-encoder loader, ending in the probe
    (DrUMTestConditioningProbe) that reports what the sampler would receive. Nothing is sampled or decoded."""
    sampler = next(node for node in graph.values() if node["class_type"] in SAMPLERS)["inputs"]
    keep: set[str] = set()
    pending = [sampler["positive"][0]]
    while pending:
        key = pending.pop()
        if key not in keep:
            keep.add(key)
            pending.extend(_sources(graph[key]))
    part = {}
    for key in sorted(keep, key=int):
        if graph[key]["class_type"] in TEXT_ENCODER_LOADERS:
            continue
        node = json.loads(json.dumps(graph[key]))
        for input_name, value in node["inputs"].items():
            if isinstance(value, list) and graph[value[0]]["class_type"] in TEXT_ENCODER_LOADERS:
                node["inputs"][input_name] = [TINY_CLIP, 0]
        part[key] = node
    part[TINY_CLIP] = {"class_type": "DrUMTestTinyCLIP", "inputs": {"family": family, "seed": 0}}
    part[PROBE] = {"class_type": "DrUMTestConditioningProbe", "inputs": {"conditioning": sampler["positive"]}}
    return part


def tiny_template_graph(name: str) -> dict:
    """Template `name`'s API copy (example_workflows/api/<name>.json) on the tests' tiny models of its family; for a
    family without a tiny diffusion model (DRUM_PART_FAMILIES), its DrUM part only (drum_part_graph)."""
    graph = json.loads(api_path(name).read_text(encoding="utf-8"))
    family = template_family(graph)
    if family in DRUM_PART_FAMILIES.values():
        return drum_part_graph(graph, family)
    return tiny_dit_graph(graph, family) if family in ("sd3", "flux") else tiny_checkpoint_graph(graph, family)


# ------------------------------------------------------------------ subgraph blueprints
SUBGRAPHS = WORKFLOWS.parent / "subgraphs"  # ComfyUI lists custom_nodes/<pack>/subgraphs/*.json in the node library
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20  # the ids litegraph gives a subgraph's input and output nodes


@dataclass(frozen=True)
class Blueprint:
    """A subgraph blueprint: an API graph inside, its inputs (name, type, [(node, input)] they feed) and outputs
    (name, type, (node, output slot))."""

    name: str
    description: str
    graph: dict
    inputs: list[tuple[str, str, list[tuple[str, str]]]]
    outputs: list[tuple[str, str, tuple[str, int]]]


PERSONALIZE = Blueprint(
    name="DrUM Personalize",
    description=(
        "A prompt personalized with your own taste, in one node: the prompts of the images in ComfyUI's output folder "
        "(DrUM History from Outputs) -> DrUM Coreset Sampler -> DrUM PeCA Loader (auto) -> DrUM Conditioner. Put it where "
        "the positive CLIP Text Encode was. Needs the PeCA adapter files in models/drum."
    ),
    graph={
        "1": {"class_type": "DrUMOutputsHistory", "inputs": {}},
        "2": {"class_type": "DrUMCoresetSampler", "inputs": {"history": ["1", 0]}},
        "3": {"class_type": "DrUMPeCALoader", "inputs": {}},
        "4": {"class_type": "DrUMConditioner", "inputs": {"adapters": ["3", 0], "history": ["2", 0]}},
    },
    inputs=[("clip", "CLIP", [("2", "clip"), ("4", "clip")]), ("text", "STRING", [("4", "text")]), ("degree", "FLOAT", [("4", "degree")])],
    outputs=[("CONDITIONING", "CONDITIONING", ("4", 0))],
)
BLUEPRINTS = [PERSONALIZE]


def _uuid(*parts: object) -> str:
    """A stable UUID for a blueprint's ids (the file is rewritten identically)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "ComfyUI-DrUM/" + "/".join(map(str, parts))))


def api_to_blueprint(blueprint: Blueprint, object_info: dict) -> dict:
    """The blueprint file ComfyUI's frontend loads: one node of the subgraph's type, the subgraph in definitions.
    Inner nodes list every input of their definition (sockets and widgets) in /object_info order; widget values are
    the API graph's or the defaults."""
    subgraph_id = _uuid(blueprint.name)
    links: list[dict] = []
    fed = {(node, name): index for index, (_n, _k, targets) in enumerate(blueprint.inputs) for node, name in targets}
    nodes, input_links, slots = [], {index: [] for index in range(len(blueprint.inputs))}, {}
    left = 40
    for column, (key, node) in enumerate(blueprint.graph.items()):
        spec = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, kind, options in ordered_inputs(spec):
            value = node["inputs"].get(name, options.get("default", "" if kind == "STRING" else None))
            if is_widget(kind, options):
                widgets.append(value)
                if options.get("control_after_generate"):
                    widgets.append("fixed")
            entry = {"name": name, "type": kind, "link": None}
            if is_widget(kind, options):
                entry["widget"] = {"name": name}
            elif name not in spec["input"].get("required", {}) and (key, name) not in fed and not isinstance(value, list):
                continue  # an optional socket left free
            slots[(key, name)] = len(inputs)
            inputs.append(entry)
        nodes.append(
            {
                "id": int(key),
                "type": node["class_type"],
                "pos": [left, 40],
                "size": node_size(node["class_type"], spec, sum(1 for (k, _n) in fed if k == key)),
                "flags": {},
                "order": column,
                "mode": 0,
                "inputs": inputs,
                "outputs": [],
                "properties": {"Node name for S&R": node["class_type"]},
                "widgets_values": widgets,
            }
        )
        left += nodes[-1]["size"][0] + COLUMN_GAP
    by_id = {str(node["id"]): node for node in nodes}

    def link(origin: int, origin_slot: int, target: int, target_slot: int, kind: str) -> int:
        links.append(
            {
                "id": len(links) + 1,
                "origin_id": origin,
                "origin_slot": origin_slot,
                "target_id": target,
                "target_slot": target_slot,
                "type": kind,
            }
        )
        return len(links)

    for key, node in blueprint.graph.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                kind = object_info[blueprint.graph[value[0]]["class_type"]]["output"][value[1]]
                by_id[key]["inputs"][slots[(key, name)]]["link"] = link(int(value[0]), value[1], int(key), slots[(key, name)], kind)
    for index, (_name, kind, targets) in enumerate(blueprint.inputs):
        for key, input_name in targets:
            link_id = link(SUBGRAPH_INPUT, index, int(key), slots[(key, input_name)], kind)
            by_id[key]["inputs"][slots[(key, input_name)]]["link"] = link_id
            input_links[index].append(link_id)
    output_links = [
        link(int(key), slot, SUBGRAPH_OUTPUT, index, kind) for index, (_name, kind, (key, slot)) in enumerate(blueprint.outputs)
    ]
    for entry in links:
        if entry["origin_id"] > 0:
            origin = by_id[str(entry["origin_id"])]
            spec = object_info[origin["type"]]
            while len(origin["outputs"]) <= entry["origin_slot"]:
                slot = len(origin["outputs"])
                names = spec.get("output_name", spec["output"])
                origin["outputs"].append({"name": names[slot], "type": spec["output"][slot], "links": []})
            origin["outputs"][entry["origin_slot"]]["links"].append(entry["id"])
    width = left
    widget_defaults = []  # the instance's widgets: the default of the first input each feeds
    for _name, kind, ((key, input_name), *_rest) in blueprint.inputs:
        if kind in WIDGET_TYPES:
            spec = object_info[blueprint.graph[key]["class_type"]]
            widget_defaults.append(next(options.get("default", "") for name, _k, options in ordered_inputs(spec) if name == input_name))
    instance = {
        "id": len(nodes) + 1,
        "type": subgraph_id,
        "pos": [40, 40],
        "size": [380, 200],
        "flags": {},
        "order": 0,
        "mode": 0,
        "inputs": [
            {"name": name, "type": kind, "link": None, **({"widget": {"name": name}} if kind in WIDGET_TYPES else {})}
            for name, kind, _targets in blueprint.inputs
        ],
        "outputs": [{"name": name, "type": kind, "links": []} for name, kind, _origin in blueprint.outputs],
        "properties": {},
        "widgets_values": widget_defaults,
        "title": blueprint.name,
    }
    return {
        "revision": 0,
        "last_node_id": instance["id"],
        "last_link_id": 0,
        "nodes": [instance],
        "links": [],
        "version": 0.4,
        "definitions": {
            "subgraphs": [
                {
                    "id": subgraph_id,
                    "version": 1,
                    "state": {"lastGroupId": 0, "lastNodeId": len(nodes), "lastLinkId": len(links), "lastRerouteId": 0},
                    "revision": 0,
                    "config": {},
                    "name": blueprint.name,
                    "description": blueprint.description,
                    "category": "DrUM",
                    "inputNode": {"id": SUBGRAPH_INPUT, "bounding": [-260, 40, 160, 40 + 20 * len(blueprint.inputs)]},
                    "outputNode": {"id": SUBGRAPH_OUTPUT, "bounding": [width, 40, 160, 60]},
                    "inputs": [
                        {"id": _uuid(blueprint.name, "input", name), "name": name, "type": kind, "linkIds": input_links[index]}
                        for index, (name, kind, _targets) in enumerate(blueprint.inputs)
                    ],
                    "outputs": [
                        {"id": _uuid(blueprint.name, "output", name), "name": name, "type": kind, "linkIds": [output_links[index]]}
                        for index, (name, kind, _origin) in enumerate(blueprint.outputs)
                    ],
                    "widgets": [],
                    "nodes": nodes,
                    "groups": [],
                    "links": links,
                    "extra": {},
                }
            ]
        },
        "extra": {},
    }


THUMBNAIL_SUFFIXES = (".jpg", ".png", ".webp")  # what ComfyUI's template browser shows beside <title>.json
THUMBNAIL_SIZE = 512
# Every template: its id (slug: the API copy example_workflows/api/<slug>.json, tests, docs) -> its title, the one name
# an artist sees: the stem of the UI file example_workflows/<title>.json and its thumbnail (the template browser titles
# a pack's card with the file stem and nothing else: docs/comfyui.md, Template browser), drawn on the thumbnail and in
# the note's title bar. ASCII, none of TITLE_FORBIDDEN (the frontend puts the stem in URLs without encoding it).
TITLES = {
    "drum_sd15": "DrUM SD1.5",
    "drum_alpha_sweep": "DrUM SD1.5 degree sweep",
    "drum_sdxl": "DrUM SDXL",
    "drum_sd3": "DrUM SD3",
    "drum_flux": "DrUM FLUX",
    "drum_chroma": "DrUM Chroma",
    "drum_ltxv": "DrUM LTX-Video",
    "drum_dislikes": "DrUM likes and dislikes",
    "drum_style_mix": "DrUM mix two tastes",
    "drum_my_outputs": "DrUM your outputs are your history",
    "drum_taste_check": "DrUM taste check",
}
TITLE_FORBIDDEN = '#?%/\\:*"<>|'
TEMPLATES = sorted(TITLES)  # the slugs


def template_title(name: str) -> str:
    """ "DrUM SD1.5": what template `name` (its slug) is called on its card, its thumbnail and its note's title bar."""
    return TITLES[name]


def ui_path(name: str, folder: Path = WORKFLOWS) -> Path:
    """example_workflows/<title>.json: the UI-format file of template `name` (its slug), the one the browser lists."""
    return folder / f"{TITLES[name]}.json"


def api_path(name: str, folder: Path = WORKFLOWS) -> Path:
    """example_workflows/api/<slug>.json: the API-format copy of template `name`."""
    return folder / "api" / f"{name}.json"


def thumbnail_paths(name: str, folder: Path = WORKFLOWS) -> list[Path]:
    """The thumbnails of template `name` that exist: example_workflows/<title>.jpg (or .png, .webp)."""
    return [path for suffix in THUMBNAIL_SUFFIXES if (path := folder / f"{TITLES[name]}{suffix}").is_file()]


NODE_LABELS = {  # a node's words on a thumbnail where its class name split at capitals would not do
    "CheckpointLoaderSimple": "Load Checkpoint",
    "DrUMPeCALoader": "PeCA Loader",
    "KSampler": "KSampler",
    "MarkdownNote": "Read me",
}
DRUM_BOX, OTHER_BOX, WIRE = (92, 62, 160), (62, 64, 72), (120, 122, 132)
BADGE_HEIGHT = 66  # the template browser's badge over a card's top left, in thumbnail pixels (see thumbnail)


def node_label(class_type: str) -> str:
    """ "DrUMCoresetSampler" -> "Coreset Sampler", "DualCLIPLoader" -> "Dual CLIP Loader": a node's words on a
    thumbnail."""
    if class_type in NODE_LABELS:
        return NODE_LABELS[class_type]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", class_type.removeprefix("DrUM"))


def sweep_values(graph: dict) -> tuple[str, list[float], tuple[str, str]] | None:
    """What a template sweeps, for its thumbnail: (axis name, values, (what 0 means, what 1 means)) for a Degree
    Slider or a History Mix set to sweep (start..end in `count` steps, the values the node gives); None when it
    sweeps nothing."""
    from drum_core.taste import unit_sweep

    meanings = {"DrUMDegreeSlider": ("degree", ("the prompt alone", "all taste")), "DrUMHistoryMix": ("mix", ("history A", "history B"))}
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] in meanings and inputs.get("sweep"):
            axis, ends = meanings[node["class_type"]]
            return axis, list(unit_sweep(inputs["start"], inputs["end"], inputs["count"], axis)), ends
    return None


def _wrap(draw, text: str, font, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def draw_graph(draw, workflow: dict, box: tuple[int, int, int, int]) -> None:
    """A UI workflow as a diagram in `box` (x0, y0, x1, y1): its nodes as labelled boxes in the template's own columns
    (left to right) and rows, DrUM nodes in colour, and its wires; notes left out."""
    from PIL import ImageFont

    nodes = [n for n in workflow["nodes"] if n["type"] not in NOTE_TYPES]
    xs = sorted({n["pos"][0] for n in nodes})
    columns: dict[int, list[dict]] = {}
    for node in sorted(nodes, key=lambda n: n["pos"][1]):
        columns.setdefault(xs.index(node["pos"][0]), []).append(node)
    x0, y0, x1, y1 = box
    column_width = (x1 - x0) / len(columns)
    rows = max(len(c) for c in columns.values())
    gap = 10
    height = min(60.0, (y1 - y0) / rows - gap)
    font = ImageFont.load_default(size=13 if column_width >= 70 else 10)
    place: dict[int, tuple[float, float, float, float]] = {}
    for index, column in columns.items():
        top = y0 + ((y1 - y0) - len(column) * (height + gap)) / 2
        for row, node in enumerate(column):
            left = x0 + index * column_width + gap / 2
            place[node["id"]] = (left, top + row * (height + gap), left + column_width - gap, top + row * (height + gap) + height)
    for _id, origin, _slot, target, _target_slot, _kind in workflow["links"]:
        if origin in place and target in place:
            a, b = place[origin], place[target]
            draw.line([(a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)], fill=WIRE, width=2)
    for node in nodes:
        left, top, right, bottom = place[node["id"]]
        fill = DRUM_BOX if node["type"].startswith("DrUM") else OTHER_BOX
        draw.rounded_rectangle((left, top, right, bottom), radius=5, fill=fill, outline=(200, 200, 210))
        lines = _wrap(draw, node_label(node["type"]), font, right - left - 6)
        draw.multiline_text(
            ((left + right) / 2, (top + bottom) / 2),
            "\n".join(lines),
            fill=(245, 245, 245),
            font=font,
            anchor="mm",
            align="center",
            spacing=2,
        )


def draw_sweep(draw, sweep: tuple[str, list[float], tuple[str, str]], box: tuple[int, int, int, int]) -> None:
    """A sweep as a diagram in `box`: an axis from 0 to 1, one image frame per value, the value under it."""
    from PIL import ImageFont

    name, values, (low, high) = sweep
    x0, y0, x1, y1 = box
    small, label = ImageFont.load_default(size=14), ImageFont.load_default(size=16)
    axis_y = y1 - 46
    left, right = x0 + 30, x1 - 30
    draw.line([(left, axis_y), (right, axis_y)], fill=(200, 200, 210), width=2)
    draw.text((left, axis_y + 22), f"0: {low}", fill=(160, 160, 170), font=small, anchor="lm")
    draw.text((right, axis_y + 22), f"1: {high}", fill=(160, 160, 170), font=small, anchor="rm")
    draw.text(((left + right) / 2, axis_y + 22), name, fill=(240, 240, 240), font=label, anchor="mm")
    slot = (right - left) / max(len(values), 1)
    size = min(slot - 14, axis_y - y0 - 60, 96)
    for index, value in enumerate(values):  # one frame per image, evenly spaced, wired to its value on the axis
        x, frame_x = left + (right - left) * value, left + slot * (index + 0.5)
        frame = (frame_x - size / 2, y0 + 4, frame_x + size / 2, y0 + 4 + size)
        shade = tuple(int(o + (d - o) * value) for o, d in zip(OTHER_BOX, DRUM_BOX, strict=True))
        draw.line([(frame_x, frame[3]), (x, axis_y)], fill=WIRE, width=2)
        draw.rectangle(frame, fill=shade, outline=(220, 220, 230), width=2)
        draw.text((frame_x, (frame[1] + frame[3]) / 2), f"{value:g}", fill=(240, 240, 240), font=label, anchor="mm")
        draw.ellipse((x - 5, axis_y - 5, x + 5, axis_y + 5), fill=(240, 200, 90))


def thumbnail(workflow: dict, graph: dict, name: str, images: list = (), note: str = ""):
    """A template's thumbnail [512, 512] (PIL) that shows what it does: a title, `note` (one line or more), the graph
    as a diagram (workflow: the UI copy), then what it sweeps as a diagram (graph: the API copy; see sweep_values) and
    the wide images of its run (a profile map). Square images (from the tests' random weights: noise) are left out."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (30, 30, 34))
    draw = ImageDraw.Draw(canvas)
    # The template browser's "Node graph" badge covers the card's top left (about 250 x 62 of 512 x 512, frontend
    # 1.58.1; the card's own title is the file name), so the title starts below it, shrunk to the width if long
    title, width = template_title(name), THUMBNAIL_SIZE - 40
    size = next((s for s in range(32, 17, -2) if draw.textlength(title, font=ImageFont.load_default(size=s)) <= width), 18)
    draw.text((20, BADGE_HEIGHT), title, fill=(240, 240, 240), font=ImageFont.load_default(size=size))
    margin, top = 12, BADGE_HEIGHT + size + 14
    if note:
        draw.multiline_text((20, top - 6), note, fill=(160, 160, 170), font=ImageFont.load_default(size=17), spacing=6)
        top += 30 + 23 * note.count("\n")
    wide = [image for image in images if image.width >= 1.5 * image.height]
    sweep = sweep_values(graph)
    below = (THUMBNAIL_SIZE - top) // 2 if wide or sweep else 0
    draw_graph(draw, workflow, (margin, top, THUMBNAIL_SIZE - margin, THUMBNAIL_SIZE - margin - below))
    if sweep:
        draw_sweep(draw, sweep, (margin, THUMBNAIL_SIZE - below, THUMBNAIL_SIZE - margin, THUMBNAIL_SIZE - margin))
    elif wide:
        image = wide[0].convert("RGB")
        width, height = THUMBNAIL_SIZE - 2 * margin, below - margin
        scale = min(width / image.width, height / image.height)
        fitted = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
        canvas.paste(fitted, (margin + (width - fitted.width) // 2, THUMBNAIL_SIZE - below))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description="write example_workflows/<title>.json (TITLES) from the API copies api/<slug>.json")
    parser.add_argument("--object-info", required=True, help="a saved GET /object_info answer")
    parser.add_argument("--workflows", default=str(WORKFLOWS))
    args = parser.parse_args()
    object_info = json.loads(Path(args.object_info).read_text())
    folder = Path(args.workflows)
    apis = sorted((folder / "api").glob("*.json"))
    untitled = [api.stem for api in apis if api.stem not in TITLES]
    if untitled:
        parser.error(f"no title in tests/support/workflows.py TITLES for {', '.join(untitled)}")
    for api in apis:
        graph = with_defaults(json.loads(api.read_text(encoding="utf-8")), object_info)
        api.write_text(json.dumps(graph, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        ui_file = ui_path(api.stem, folder)
        note = template_note(json.loads(ui_file.read_text(encoding="utf-8"))) if ui_file.is_file() else None
        ui = api_to_ui(graph, object_info, note, title=f"Read me · {template_title(api.stem)}")
        ui_file.write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    SUBGRAPHS.mkdir(exist_ok=True)
    for blueprint in BLUEPRINTS:
        path = SUBGRAPHS / f"{blueprint.name}.json"
        path.write_text(json.dumps(api_to_blueprint(blueprint, object_info), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
