"""The templates (example workflows) and malformed inputs in a real ComfyUI server (HTTP).

Every template in example_workflows/ validates and runs on the tiny models with nothing copied
into ComfyUI's folders by hand (its history is in the History Loader's text box); each run's
images (the profile map) go on the template's thumbnail candidate beside its graph and sweep drawn
as diagrams (tools/make_thumbnails.py installs them).
The templates of families the tests have no tiny diffusion model for (Chroma, LTX-Video:
support.workflows DRUM_PART_FAMILIES) are validated whole by the server, against empty stand-ins
of their model files (the run then stops at the first loader), and their DrUM part runs on the
tiny T5 of the family, up to what the sampler would receive.
"""

import copy
import json

import numpy as np
import pytest
from PIL import Image
from support.server import PACK_NAME, PromptRejected
from support.workflows import (
    BADGE_HEIGHT,
    DRUM_PART_FAMILIES,
    MODEL_FILES,
    PROBE,
    TEMPLATES,
    THUMBNAIL_SUFFIXES,
    TITLES,
    WORKFLOWS,
    api_path,
    node_label,
    sweep_values,
    template_note,
    template_title,
    thumbnail,
    thumbnail_paths,
    tiny_template_graph,
    ui_path,
    ui_to_api,
)

pytestmark = pytest.mark.server

NODE_IDS = [
    "DrUMHistoryLoader",
    "DrUMCoresetSampler",
    "DrUMPeCALoader",
    "DrUMConditioner",
    "DrUMDegreeSlider",
    "DrUMProfilePreview",
    "DrUMTasteCheck",
    "DrUMOutputsHistory",
]
# saved images of a run, where not 1 (the DrUM part of Chroma and LTX-Video saves none)
IMAGES = {"drum_sd15": 2, "drum_alpha_sweep": 5, "drum_style_mix": 3, "drum_taste_check": 2, "drum_chroma": 0, "drum_ltxv": 0}
FAMILIES = {"drum_sdxl": "sdxl", "drum_sd3": "sd3", "drum_flux": "flux", "drum_chroma": "pixart", "drum_ltxv": "ltxv"}  # where not sd1
ADAPTER_FILES = {"sd1": ["L"], "sdxl": ["L", "bigG"], "sd3": ["L", "bigG", "T5"], "flux": ["L", "T5"], "pixart": ["T5"], "ltxv": ["T5"]}
LOADERS = ("CheckpointLoaderSimple", "UNETLoader", "CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader", "VAELoader")
DRUM_PART_NOTE = "validated whole by a real ComfyUI; its DrUM part run on\na tiny T5 of the family (no tiny {label} model to sample)"
DRUM_PART_LABELS = {"drum_chroma": "Chroma", "drum_ltxv": "LTX-Video"}  # the model family, in DRUM_PART_NOTE
tiny_graph = tiny_template_graph  # the name other server tests import


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


@pytest.mark.parametrize("name", TEMPLATES)
def validate_whole_template(server, name: str) -> None:
    """The template as saved passes the server's validation for every node: its model files are empty stand-ins
    under their names in the server's model folders (removed after), so the run stops at the first loader."""
    graph = json.loads(api_path(name).read_text(encoding="utf-8"))
    files = {value for node in graph.values() if node["class_type"] in LOADERS for value in node["inputs"].values() if value in MODEL_FILES}
    assert files, f"{name}: no model file of support.workflows MODEL_FILES in its loaders"
    stand_ins = [server.base / "models" / MODEL_FILES[file][1] / file for file in sorted(files)]
    try:
        for path in stand_ins:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        entry = server.run(graph)  # PromptRejected (naming the nodes) if any node fails validation
    finally:
        for path in stand_ins:
            path.unlink(missing_ok=True)
    assert entry.status == "error" and entry.error["node_type"] in LOADERS, entry.error or entry.messages
    assert server.alive()


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_validates_and_runs_without_copying_a_file(dit_models, name):
    server = dit_models
    graph = tiny_template_graph(name)
    drum_part_only = FAMILIES.get(name) in DRUM_PART_FAMILIES.values()
    if drum_part_only:
        validate_whole_template(server, name)
        conditioner = node_of(graph, "DrUMConditioner")["inputs"]  # beside it, ComfyUI's own encode of the same prompt
        graph["201"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": conditioner["clip"], "text": conditioner["text"]}}
        graph["202"] = {"class_type": "DrUMTestConditioningProbe", "inputs": {"conditioning": ["201", 0]}}
    loaders = [node["inputs"] for node in graph.values() if node["class_type"] == "DrUMHistoryLoader"]
    from_outputs = any(node["class_type"] == "DrUMOutputsHistory" for node in graph.values())  # the user's own images
    assert (loaders or from_outputs) and all(inputs["file"] == "none" and inputs["text"].strip() for inputs in loaders), (
        f"{name}: history not in the text box"
    )
    assert not list((server.base / "input").glob("example_history*")), "the server's input folder must not hold the example history"
    entry = server.run(graph)
    assert entry.status == "success", (entry.error or {}).get("exception_message") or entry.messages
    saved = entry.images(server.base / "output")
    assert len(saved) == IMAGES.get(name, 1), saved
    images = []
    for path in saved:
        image = Image.open(path).convert("RGB")
        pixels = np.asarray(image).astype(np.float64)
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        assert pixels.std() > 5 and len(colours) > 64, (path.name, pixels.std(), len(colours))  # a blank or black image fails
        images.append(image)
    if name == "drum_sd15":
        profile = next(p for p in saved if "profile" in p.name)
        assert Image.open(profile).size == (1024, 512)
    maps = [out["drum_map"][0] for out in entry.outputs.values() if "drum_map" in out]
    if name == "drum_alpha_sweep":  # the slider's degrees reach the profile map too
        assert [profile["degrees"] for profile in maps] == [pytest.approx([0.0, 0.3, 0.6, 0.9], abs=1e-9)]
    if name == "drum_sd15":  # the Conditioner's own degree widget reaches the map (its degrees output)
        assert [profile["degrees"] for profile in maps] == [[node_of(graph, "DrUMConditioner")["inputs"]["degree"]]]
    conditioners = [out["drum_conditioning"][0] for out in entry.outputs.values() if "drum_conditioning" in out]
    assert conditioners and {c["family"] for c in conditioners} == {FAMILIES.get(name, "sd1")}
    note = {}
    if drum_part_only:
        (probe,) = entry.outputs[PROBE]["drum_probe"]  # what the sampler would receive
        (plain,) = entry.outputs["202"]["drum_probe"]
        assert probe["tokens"] == plain["tokens"] and probe["tokens"][2] == 4096, (probe["tokens"], plain["tokens"])
        assert probe["attention_mask"] == plain["attention_mask"] and probe["tokens_sample"] != plain["tokens_sample"]
        if FAMILIES[name] == "ltxv":  # LTXVConditioning's frame rate on the personalized conditioning, its mask kept
            assert probe["tokens"][1] == 128 and probe["attention_mask"] is not None and "frame_rate" in probe["keys"]
        else:  # Chroma: unmasked, at ComfyUI's own length (T5TokenizerOptions' padding token included)
            assert probe["attention_mask"] is None
        note = {"note": DRUM_PART_NOTE.format(label=DRUM_PART_LABELS[name])}
    candidates = server.base.parent / "thumbnails"
    candidates.mkdir(exist_ok=True)
    workflow = json.loads(ui_path(name).read_text(encoding="utf-8"))
    template = json.loads(api_path(name).read_text(encoding="utf-8"))
    # named as the template's thumbnail is (its title): tools/make_thumbnails.py copies it beside the template
    thumbnail(workflow, template, name, images, **note).save(candidates / f"{template_title(name)}.jpg", quality=90)


def test_the_map_names_the_degree_the_conditioner_runs_at_after_it_moved(server):
    """drum_sd15 has no Degree Slider: the Profile Preview gets the Conditioner's own degree (its degrees output).
    Moved between two runs, the degree reaches the map and the saved picture: nothing is served from the cache."""
    graph = tiny_graph("drum_sd15")
    preview = next(key for key, node in graph.items() if node["class_type"] == "DrUMProfilePreview")
    saver = next(key for key, node in graph.items() if node["inputs"].get("images") == [preview, 0])
    pictures = {}
    for degree in (0.35, 0.55):  # neither is the template's 0.3, which an earlier test may have run (cached: no outputs)
        node_of(graph, "DrUMConditioner")["inputs"]["degree"] = degree
        entry = server.run(graph)
        assert entry.status == "success", entry.error or entry.messages
        assert entry.outputs[preview]["drum_map"][0]["degrees"] == [degree]
        (image,) = entry.outputs[saver]["images"]
        pictures[degree] = np.asarray(Image.open(server.base / "output" / image.get("subfolder", "") / image["filename"]))
    assert pictures[0.35].shape == pictures[0.55].shape and not np.array_equal(pictures[0.35], pictures[0.55])  # the legend


def test_every_template_has_a_note_and_a_thumbnail():
    for name in TEMPLATES:
        note = template_note(json.loads(ui_path(name).read_text(encoding="utf-8")))
        assert note and "models/drum" in note and "Queue" in note, f"{name}: no MarkdownNote saying what to do"
        family = FAMILIES.get(name, "sd1")
        assert all(f"{adapter}.safetensors" in note for adapter in ADAPTER_FILES[family]), (name, family)
        thumbnails = thumbnail_paths(name)
        assert len(thumbnails) == 1, f"{name}: one thumbnail ({', '.join(THUMBNAIL_SUFFIXES)}) expected, found {thumbnails}"
        with Image.open(thumbnails[0]) as image:
            assert min(image.size) >= 256


def test_thumbnails_draw_the_graph_and_what_the_template_sweeps():
    """The thumbnail's words and sweep come from the template: every node's label, the Degree Slider's sweep
    (start..end in count steps), the History Mix values; a template that sweeps nothing has no sweep diagram."""
    assert node_label("DrUMCoresetSampler") == "Coreset Sampler" and node_label("DualCLIPLoader") == "Dual CLIP Loader"
    assert node_label("T5TokenizerOptions") == "T5 Tokenizer Options" and node_label("KSampler") == "KSampler"
    api = {name: json.loads(api_path(name).read_text(encoding="utf-8")) for name in TEMPLATES}
    slider = next(n["inputs"] for n in api["drum_alpha_sweep"].values() if n["class_type"] == "DrUMDegreeSlider")
    axis, values, _ends = sweep_values(api["drum_alpha_sweep"])
    step = (slider["end"] - slider["start"]) / (slider["count"] - 1)
    assert axis == "degree" and values == pytest.approx([slider["start"] + i * step for i in range(slider["count"])])
    assert sweep_values(api["drum_style_mix"])[:2] == ("mix", [0.0, 0.5, 1.0])
    assert sweep_values(api["drum_sd15"]) is None
    workflow = json.loads(ui_path("drum_style_mix").read_text(encoding="utf-8"))
    image = np.asarray(thumbnail(workflow, api["drum_style_mix"], "drum_style_mix"))
    with_map = np.asarray(thumbnail(workflow, api["drum_style_mix"], "drum_style_mix", [Image.new("RGB", (1024, 512), "white")]))
    assert image.shape == (512, 512, 3) and np.array_equal(image, with_map)  # a sweep takes the place of the map
    boxes = np.all(image == (92, 62, 160), axis=-1).sum(), np.all(image == (62, 64, 72), axis=-1).sum()
    assert min(boxes) > 500, boxes  # DrUM nodes and the others drawn as boxes of their colours
    for name in TEMPLATES:  # nothing under the template browser's badge (the title starts below it); the title fits
        ui = json.loads(ui_path(name).read_text(encoding="utf-8"))
        note = DRUM_PART_NOTE.format(label=DRUM_PART_LABELS[name]) if FAMILIES.get(name) in DRUM_PART_FAMILIES.values() else ""
        drawn = np.asarray(thumbnail(ui, api[name], name, note=note))
        assert (drawn[:BADGE_HEIGHT] == (30, 30, 34)).all(), f"{name}: drawn under the badge"
        assert (drawn[BADGE_HEIGHT : BADGE_HEIGHT + 20, 500:] == (30, 30, 34)).all(), f"{name}: title runs off the right edge"
        with Image.open(thumbnail_paths(name)[0]) as shipped:
            assert np.abs(np.asarray(shipped.convert("RGB"))[:BADGE_HEIGHT].astype(int) - (30, 30, 34)).max() < 24, name


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
    cases = {  # the history cases empty the text box: pasted text wins over the file
        "bad history file": (("DrUMHistoryLoader", {"file": "bad.json", "text": ""}), ["DrUMHistoryLoader", "bad.json", "line"]),
        "empty history file": (("DrUMHistoryLoader", {"file": "empty.txt", "text": ""}), ["DrUMHistoryLoader", "empty.txt"]),
        "path outside the input folder": (("DrUMHistoryLoader", {"file": "../secret.txt", "text": ""}), ["secret.txt"]),
        "adapter for the wrong encoder": (("DrUMPeCALoader", {"L": "bigG.safetensors"}), ["bigG.safetensors", "L slot"]),
        "missing adapter": (("DrUMPeCALoader", {"L": "none"}), ["DrUMConditioner", "L slot is 'none'"]),
    }
    for case, ((class_type, inputs), expected) in cases.items():
        graph = copy.deepcopy(good)
        node_of(graph, class_type)["inputs"].update(inputs)
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
    (drum,) = entry.images(server.base / "output")
    plain = copy.deepcopy(graph)  # the same graph with ComfyUI's own CLIP Text Encode on the positive side
    plain["5"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": graph["5"]["inputs"]["clip"], "text": graph["5"]["inputs"]["text"]}}
    plain["10"]["inputs"]["filename_prefix"] = "plain"
    reference = server.run(plain)
    assert reference.status == "success", reference.error
    (expected,) = reference.images(server.base / "output")
    pixels = np.asarray(Image.open(drum).convert("RGB"))
    assert np.array_equal(pixels, np.asarray(Image.open(expected).convert("RGB")))  # the very image CLIP Text Encode gives
    assert pixels.astype(np.float64).std() > 5  # and not a blank one


def test_ui_workflows_match_their_api_copies(server):
    info = server.object_info()
    assert sorted(path.stem for path in (WORKFLOWS / "api").glob("*.json")) == TEMPLATES
    assert sorted(path.stem for path in WORKFLOWS.glob("*.json")) == sorted(TITLES.values())  # UI files by title
    for name in TEMPLATES:
        ui = json.loads(ui_path(name).read_text())
        api = json.loads(api_path(name).read_text())
        assert ui_to_api(ui, info) == api, name
        assert next(node for node in ui["nodes"] if node["type"] == "MarkdownNote")["title"] == f"Read me · {TITLES[name]}"
