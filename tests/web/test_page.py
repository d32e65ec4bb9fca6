"""The DrUM page extension in real Chromium against a real ComfyUI 0.3.75 and its PyPI frontend.

Each test opens the example workflow it needs in one shared page: the nodes render with their
widgets, a history file dropped on the History Loader is uploaded and selected, the degree
slider drives the saved value, and after a run the panels show the prompts as plain text.
"""

from __future__ import annotations

import secrets

import pytest
from comfy_page import (
    drop_file_on_canvas,
    drop_file_on_widget,
    keep_only,
    load_workflow,
    node_client_point,
    nodes_of_type,
    panel_rows,
    run_graph,
    save_screenshot,
    set_widgets,
    widget_value,
)

pytestmark = pytest.mark.web

RUN = secrets.token_hex(4)  # fresh file names: a server that already ran the graph must not answer from its cache
HOSTILE_PROMPT = "<img src=x onerror=alert(1)>"
DROPPED_HISTORY = (
    "a watercolor fox in a misty forest\t5\n"
    f"{HOSTILE_PROMPT}\t4\n"
    "a neon city street at night, rain\t2\n"
    "portrait of an old sailor, oil painting\t5\n"
    "<b>bold</b> & <script>alert(2)</script> lighthouse\t3\n"
)
DROPPED_PROMPTS = [line.split("\t")[0] for line in DROPPED_HISTORY.splitlines()]
PAGE_WIDGETS = {
    "DrUMHistoryLoader": ["drum_upload", "drum_history_preview"],
    "DrUMCoresetSampler": ["drum_picks"],
    "DrUMConditioner": ["drum_degree", "drum_picks"],
    "DrUMDegreeSlider": ["drum_degree"],
}
TINY_RUN = {
    "CheckpointLoaderSimple": {"ckpt_name": "tiny_sd15.safetensors"},
    "EmptyLatentImage": {"width": 64, "height": 64},
    "KSampler": {"steps": 2},
}


def only(page, node_type: str) -> int:
    """The id of the graph's one node of `node_type`."""
    found = nodes_of_type(page, node_type)
    assert len(found) == 1, f"expected one {node_type} in the workflow, found {len(found)}"
    return found[0]["id"]


def test_extension_loads_without_errors(page, page_errors, extension_url):
    assert page.evaluate("() => window.app.extensions.some((extension) => extension.name === 'DrUM.Page')")
    assert page.evaluate("async (url) => (await fetch(url)).ok", extension_url)
    assert page_errors == []


@pytest.mark.parametrize("name", ["drum_sd15", "drum_alpha_sweep"])
def test_example_workflow_renders_nodes_with_their_widgets(page, workflows, artifacts, page_errors, name):
    load_workflow(page, workflows[name])
    saved_nodes = {node["id"]: node for node in workflows[name]["nodes"]}
    for node_type, page_widgets in PAGE_WIDGETS.items():
        for node in nodes_of_type(page, node_type):
            names = [widget["name"] for widget in node["widgets"]]
            assert names[-len(page_widgets) :] == page_widgets, f"{name}: {node_type} widgets {names}"
            assert all(not w["serialize"] for w in node["widgets"] if w["name"] in page_widgets), f"{node_type}: a page widget is saved"
            saved_values = [w["value"] for w in node["widgets"] if w["serialize"] and w["name"] != "control_after_generate"]
            assert saved_values == saved_nodes[node["id"]]["widgets_values"][: len(saved_values)]
    history = only(page, "DrUMHistoryLoader")
    assert widget_value(page, history, "file") == "example_history.txt"
    assert "Drop a history file" in panel_rows(page, history, "drum_history_preview")["summary"]
    for degree in page.locator(".drum-degree").all():
        labels = degree.inner_text()
        assert "target" in labels and "history" in labels
    if name == "drum_alpha_sweep":
        slider = only(page, "DrUMDegreeSlider")
        assert any("sweep: 4 degrees from 0.00 to 0.90" in degree.inner_text() for degree in page.locator(".drum-degree").all())
        assert page.locator(".drum-degree.drum-inactive").count() == 2, "a sweep and a linked degrees input both override the slider"
        assert widget_value(page, slider, "degree") == 0.3
    save_screenshot(page, artifacts / f"workflow-{name}.png")
    assert page_errors == []


def test_degree_slider_drives_the_saved_value(page, workflows):
    load_workflow(page, workflows["drum_sd15"])
    conditioner = only(page, "DrUMConditioner")
    degree = page.locator(".drum-degree:not(.drum-inactive)")
    assert degree.count() == 1
    degree.locator(".drum-degree-slider").fill("0.75")
    assert widget_value(page, conditioner, "degree") == 0.75
    assert degree.locator(".drum-degree-number").input_value() == "0.75"
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    inputs = prompt[str(conditioner)]["inputs"]
    assert inputs["degree"] == 0.75 and not {"drum_degree", "drum_picks"} & set(inputs)
    saved = page.evaluate("(id) => window.app.graph.serialize().nodes.find((node) => node.id === id).widgets_values", conditioner)
    text = next(node for node in workflows["drum_sd15"]["nodes"] if node["id"] == conditioner)["widgets_values"][0]
    assert saved == [text, 0.75]

    degree.locator(".drum-degree-number").fill("0.4")
    degree.locator(".drum-degree-number").press("Enter")
    assert widget_value(page, conditioner, "degree") == 0.4
    degree.locator(".drum-degree-number").blur()  # the field being typed in is left alone
    set_widgets(page, conditioner, {"degree": 0.1})  # changed elsewhere (undo, a script): the slider follows on the next draw
    page.wait_for_function("(input) => input.value === '0.10'", arg=degree.locator(".drum-degree-number").element_handle())
    assert degree.locator(".drum-degree-slider").input_value() == "0.1"


def test_dropped_history_files_are_uploaded_and_selected(page, workflows, input_dir):
    load_workflow(page, workflows["drum_sd15"])
    node = only(page, "DrUMHistoryLoader")
    on_panel, on_canvas = f"panel_{RUN}.jsonl", f"canvas_{RUN}.txt"
    selected = "([id, name]) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'file').value === name"

    drop_file_on_widget(page, node, "drum_history_preview", on_panel, '"a first prompt"\n')
    page.wait_for_function(selected, arg=[node, on_panel])
    assert (input_dir / on_panel).read_text(encoding="utf-8") == '"a first prompt"\n'

    drop_file_on_canvas(page, node_client_point(page, node), on_canvas, DROPPED_HISTORY)
    page.wait_for_function(selected, arg=[node, on_canvas])
    assert (input_dir / on_canvas).read_text(encoding="utf-8") == DROPPED_HISTORY
    options = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'file').options.values", node)
    assert {on_panel, on_canvas, "example_history.txt"} <= set(options)
    assert panel_rows(page, node, "drum_history_preview")["summary"] == f"Uploaded {on_canvas} to the input folder"


def test_run_shows_history_and_picks_as_text(page, workflows, input_dir, dialogs, artifacts, page_errors):
    load_workflow(page, workflows["drum_sd15"])
    history, sampler, conditioner = (only(page, kind) for kind in ("DrUMHistoryLoader", "DrUMCoresetSampler", "DrUMConditioner"))
    for node_type, values in TINY_RUN.items():
        set_widgets(page, only(page, node_type), values)
    name = f"history_{RUN}.txt"
    drop_file_on_canvas(page, node_client_point(page, history), name, DROPPED_HISTORY)
    page.wait_for_function(
        "([id, name]) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'file').value === name", arg=[history, name]
    )

    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished

    shown = panel_rows(page, history, "drum_history_preview")
    assert shown["summary"] == f"{len(DROPPED_PROMPTS)} prompts · {name}"
    assert shown["prompts"] == DROPPED_PROMPTS
    assert shown["weights"] == ["5.00", "4.00", "2.00", "5.00", "3.00"]
    picks = panel_rows(page, sampler, "drum_picks")
    assert picks["summary"] == f"{len(picks['prompts'])} prompts picked"
    assert picks["prompts"] and set(picks["prompts"]) <= set(DROPPED_PROMPTS)
    assert all(float(weight) > 0 for weight in picks["weights"])
    references = panel_rows(page, conditioner, "drum_picks")
    assert references["summary"].startswith(f"sd1 · {len(picks['prompts'])} reference prompts · α 0.30")
    assert references["prompts"] == picks["prompts"]

    # Prompts are text: no element was made from them and no script ran.
    assert page.locator(".drum-panel img, .drum-panel script, .drum-panel b").count() == 0
    assert page.evaluate('() => document.querySelectorAll(\'img[src="x"], img[src$="/x"]\').length') == 0
    assert page.get_by_text(HOSTILE_PROMPT, exact=True).count() >= 1
    assert dialogs == []
    assert page_errors == []
    save_screenshot(page, artifacts / "after-run.png")


def test_readme_screenshot_of_the_example_workflow(page, workflows, artifacts):
    """The example workflow on the shipped example history, run: test-artifacts/web/screenshot.png (docs/screenshot.png)."""
    load_workflow(page, workflows["drum_sd15"])
    for node_type, values in TINY_RUN.items():
        set_widgets(page, only(page, node_type), values)
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    history, sampler, conditioner = (only(page, kind) for kind in ("DrUMHistoryLoader", "DrUMCoresetSampler", "DrUMConditioner"))
    assert panel_rows(page, history, "drum_history_preview")["summary"].endswith("prompts · example_history.txt")
    profile = page.evaluate(
        "() => window.app.graph.nodes.find((n) => n.comfyClass === 'SaveImage' && n.getInputNode(0)?.comfyClass === 'DrUMProfilePreview').id"
    )
    widths = page.evaluate("(ids) => ids.map((id) => window.app.graph.getNodeById(id).size[0])", [history, sampler, conditioner])
    x = [0, widths[0] + 40, widths[0] + widths[1] + 80]
    layout = {history: (x[0], 0, 440), sampler: (x[1], 0, 340), conditioner: (x[2], 0, 440), profile: (x[1], 420, 320)}
    keep_only(page, layout, scale=0.9)
    save_screenshot(page, artifacts / "screenshot.png", nodes=list(layout), palette=True)
    assert (artifacts / "screenshot.png").stat().st_size < 300_000


def test_locale_file_overrides_the_strings(page, extension_url, locales):
    strings = extension_url.replace("/drum.js", "/strings.js")
    english = page.evaluate("async (url) => (await import(url)).t('picks.summary', { count: 3 })", strings)
    assert english == "3 prompts picked"
    assert locales, "web/locales/ holds no translation"
    for locale in locales:
        loaded = page.evaluate(
            """async ([url, locale]) => {
                const strings = await import(url);
                const warnings = [];
                const warn = console.warn;
                console.warn = (...args) => warnings.push(args.join(" "));
                try {
                    await strings.loadLocale(locale);
                    return { target: strings.t("degree.target"), summary: strings.t("picks.summary", { count: 3 }), warnings };
                } finally {
                    console.warn = warn;
                    await strings.loadLocale("en");
                }
            }""",
            [strings, locale],
        )
        assert loaded["warnings"] == [], f"web/locales/{locale}.json: {loaded['warnings']}"
        assert loaded["target"] != "target", f"web/locales/{locale}.json does not translate degree.target"
        assert "3" in loaded["summary"] and "{count}" not in loaded["summary"]
    assert page.evaluate("async (url) => (await import(url)).t('degree.target')", strings) == "target"
