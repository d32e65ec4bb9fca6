"""The DrUM page extension in real Chromium against a real ComfyUI 0.3.75 serving the PyPI frontend
that tools/bootstrap.sh pins, in both node renderers (classic canvas, Vue "Nodes 2.0").

Each test opens the example workflow it needs in one shared page: the nodes render with their
widgets, a history file dropped on the History Loader is uploaded and selected, the degree
slider drives the saved value, after a run the panels show the prompts as plain text, a reload
refills them from /history, and a failed run empties them.
"""

from __future__ import annotations

import re
import secrets

import pytest
from comfy_page import (
    drop_file_on_node,
    drop_file_on_widget,
    keep_only,
    load_workflow,
    nodes_of_type,
    panel_rows,
    reload,
    run_graph,
    save_screenshot,
    set_widgets,
    wait_for_prompts,
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
    "DrUMOutputsHistory": ["drum_outputs"],
    "DrUMCoresetSampler": ["drum_picks"],
    "DrUMConditioner": ["drum_degree", "drum_picks"],
    "DrUMDegreeSlider": ["drum_degree"],
    "DrUMProfilePreview": ["drum_map"],
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


def select_history(page, node: int, name: str, content: str) -> None:
    """Drops a history file on the History Loader, waits until it is uploaded and selected, and empties the
    loader's text box (pasted prompts are used instead of the file)."""
    drop_file_on_node(page, node, name, content)
    set_widgets(page, node, {"text": ""})
    page.wait_for_function(
        "([id, name]) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'file').value === name", arg=[node, name]
    )


def run_tiny(page, workflow: dict) -> dict:
    """Opens `workflow` with the tiny checkpoint and a 64 px, 2-step sampler, runs it; the run's end event."""
    load_workflow(page, workflow)
    for node_type, values in TINY_RUN.items():
        set_widgets(page, only(page, node_type), values)
    return run_graph(page)


def test_extension_loads_without_errors(page, page_errors, extension_url, renderer):
    assert page.evaluate("() => window.app.extensions.some((extension) => extension.name === 'DrUM.Page')")
    assert page.evaluate("async (url) => (await fetch(url)).ok", extension_url)
    assert page.evaluate("() => window.app.extensionManager.setting.get('Comfy.VueNodes.Enabled')") == (renderer == "vue")
    assert page_errors == []


@pytest.mark.parametrize("name", ["drum_sd15", "drum_alpha_sweep"])
def test_example_workflow_renders_nodes_with_their_widgets(page, workflows, artifacts, page_errors, renderer, name):
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
    assert widget_value(page, history, "file") == "none" and widget_value(page, history, "text").startswith("watercolor")  # no file to copy
    assert "Drop a history file" in panel_rows(page, history, "drum_history_preview")["summary"]
    panels = page.locator(".drum-panel")
    assert panels.count() == sum(
        len(nodes_of_type(page, kind)) for kind in ("DrUMHistoryLoader", "DrUMCoresetSampler", "DrUMConditioner", "DrUMProfilePreview")
    )
    assert all(panel.is_visible() for panel in panels.all()), f"{renderer}: a panel is not drawn"
    for degree in page.locator(".drum-degree").all():
        assert degree.is_visible(), f"{renderer}: a degree slider is not drawn"
        labels = degree.inner_text()
        assert "target" in labels and "history" in labels
    if name == "drum_alpha_sweep":
        slider = only(page, "DrUMDegreeSlider")
        assert any("sweep: 4 degrees from 0.00 to 0.90" in degree.inner_text() for degree in page.locator(".drum-degree").all())
        assert page.locator(".drum-degree.drum-inactive").count() == 2, "a sweep and a linked degrees input both override the slider"
        assert widget_value(page, slider, "degree") == 0.3
        set_widgets(page, slider, {"sweep": False})  # a widget changed elsewhere: the summary follows without a redraw
        assert page.locator(".drum-degree.drum-inactive").count() == 1
        assert not any("sweep:" in degree.inner_text() for degree in page.locator(".drum-degree").all())
    save_screenshot(page, artifacts / f"workflow-{name}-{renderer}.png")
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
    saved = page.evaluate(
        "(id) => window.app.graph.serialize().nodes.find((node) => String(node.id) === String(id)).widgets_values", conditioner
    )
    text = next(node for node in workflows["drum_sd15"]["nodes"] if node["id"] == conditioner)["widgets_values"][0]
    assert saved[:2] == [text, 0.75]

    degree.locator(".drum-degree-number").fill("0.4")
    degree.locator(".drum-degree-number").press("Enter")
    assert widget_value(page, conditioner, "degree") == 0.4
    degree.locator(".drum-degree-number").blur()  # the field being typed in is left alone
    set_widgets(page, conditioner, {"degree": 0.1})  # changed elsewhere (undo, a script): the slider follows
    page.wait_for_function("(input) => input.value === '0.10'", arg=degree.locator(".drum-degree-number").element_handle())
    assert degree.locator(".drum-degree-slider").input_value() == "0.1"


def test_degree_slider_follows_the_mouse_and_leaves_the_node_in_place(page, workflows):
    load_workflow(page, workflows["drum_sd15"])
    conditioner = only(page, "DrUMConditioner")
    position = page.evaluate("(id) => [...window.app.graph.getNodeById(id).pos]", conditioner)
    box = page.locator(".drum-degree:not(.drum-inactive) .drum-degree-slider").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 1, y, steps=8)
    page.mouse.up()
    assert widget_value(page, conditioner, "degree") == 1.0
    assert page.evaluate("(id) => [...window.app.graph.getNodeById(id).pos]", conditioner) == position


def test_dropped_history_files_are_uploaded_and_selected(page, workflows, input_dir, renderer):
    load_workflow(page, workflows["drum_sd15"])
    node = only(page, "DrUMHistoryLoader")
    on_panel, on_node = f"panel_{renderer}_{RUN}.jsonl", f"node_{renderer}_{RUN}.txt"
    selected = "([id, name]) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'file').value === name"

    drop_file_on_widget(page, node, "drum_history_preview", on_panel, '"a first prompt"\n')
    page.wait_for_function(selected, arg=[node, on_panel])
    assert (input_dir / on_panel).read_text(encoding="utf-8") == '"a first prompt"\n'

    select_history(page, node, on_node, DROPPED_HISTORY)
    assert (input_dir / on_node).read_text(encoding="utf-8") == DROPPED_HISTORY
    options = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'file').options.values", node)
    assert {on_panel, on_node, "example_history.txt"} <= set(options)
    shown = panel_rows(page, node, "drum_history_preview")
    assert shown["summary"] == f"Uploaded {on_node}: {len(DROPPED_PROMPTS)} prompts. Run the graph to use it."
    assert not shown["failed"] and shown["prompts"] == []  # the notice replaces what the panel showed


def test_run_shows_history_and_picks_as_text(page, workflows, dialogs, artifacts, page_errors, renderer):
    load_workflow(page, workflows["drum_sd15"])
    history, sampler, conditioner = (only(page, kind) for kind in ("DrUMHistoryLoader", "DrUMCoresetSampler", "DrUMConditioner"))
    for node_type, values in TINY_RUN.items():
        set_widgets(page, only(page, node_type), values)
    name = f"history_{renderer}_{RUN}.txt"
    select_history(page, history, name, DROPPED_HISTORY)

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
    save_screenshot(page, artifacts / f"after-run-{renderer}.png")

    # Outputs live in the page only: a reload (or undo, or a tab switch) refills the panels from /history.
    reload(page)
    page.wait_for_function(
        "([id, summary]) => window.app.graph.getNodeById(id)?.widgets.find((w) => w.name === 'drum_picks').element"
        ".querySelector('.drum-summary').textContent === summary",
        arg=[sampler, picks["summary"]],
    )
    assert panel_rows(page, history, "drum_history_preview") == shown
    assert panel_rows(page, sampler, "drum_picks") == picks
    assert panel_rows(page, conditioner, "drum_picks") == references
    assert page_errors == []


def test_a_failed_run_says_why_in_one_place(page, workflows, input_dir, renderer, page_errors):
    finished = run_tiny(page, workflows["drum_sd15"])
    assert finished["type"] == "execution_success", finished
    history, sampler, conditioner = (only(page, kind) for kind in ("DrUMHistoryLoader", "DrUMCoresetSampler", "DrUMConditioner"))
    wait_for_prompts(page, sampler, "drum_picks")

    broken = f"broken_{renderer}_{RUN}.json"  # passes the upload check, then breaks on disk: fails when the loader reads it
    select_history(page, history, broken, '["a fine prompt"]\n')
    (input_dir / broken).write_text('["an unfinished list",\n', encoding="utf-8")
    finished = run_graph(page)
    assert finished["type"] == "execution_error" and finished["detail"]["node_type"] == "DrUMHistoryLoader", finished
    failed = panel_rows(page, history, "drum_history_preview")
    assert failed["failed"] and failed["prompts"] == []
    assert failed["summary"].startswith(f"The last run failed here: {broken} line 2: broken JSON"), failed
    assert str(input_dir) not in failed["summary"] and "DrUMHistoryLoader" not in failed["summary"]
    for node in (sampler, conditioner):  # one error in one place: the others say where the run stopped, not in red
        shown = panel_rows(page, node, "drum_picks")
        assert not shown["failed"] and shown["prompts"] == [], f"node {node} kept a stale result: {shown}"
        assert shown["summary"] == "Not run: the last run stopped at DrUM History Loader."

    reload(page)  # the failure is what /history says of the last run too
    page.wait_for_function(
        "(id) => window.app.graph.getNodeById(id)?.widgets.find((w) => w.name === 'drum_history_preview').element"
        ".classList.contains('drum-failed')",
        arg=history,
    )
    assert panel_rows(page, conditioner, "drum_picks")["summary"] == "Not run: the last run stopped at DrUM History Loader."
    assert page_errors == []


def test_nodes_taken_from_the_cache_show_their_earlier_output(page, workflows):
    """ComfyUI sends nothing for cached nodes: a fresh copy of a workflow that already ran shows that run's panels."""
    finished = run_tiny(page, workflows["drum_sd15"])
    assert finished["type"] == "execution_success", finished
    sampler, conditioner = (only(page, kind) for kind in ("DrUMCoresetSampler", "DrUMConditioner"))
    first = panel_rows(page, sampler, "drum_picks"), panel_rows(page, conditioner, "drum_picks")
    assert first[0]["prompts"]

    finished = run_tiny(page, workflows["drum_sd15"])  # new nodes, same inputs: all DrUM nodes come from the cache
    assert finished["type"] == "execution_success", finished
    wait_for_prompts(page, sampler, "drum_picks")
    assert (panel_rows(page, sampler, "drum_picks"), panel_rows(page, conditioner, "drum_picks")) == first


def test_outputs_put_back_by_the_frontend_are_shown(page, workflows):
    """Newer frontends put finished outputs back on the graph (a job opened from the queue): onNodeOutputsUpdated."""
    load_workflow(page, workflows["drum_sd15"])
    sampler = only(page, "DrUMCoresetSampler")
    picks = [{"prompt": "a kept prompt", "weight": 2.5}]
    page.evaluate("([id, picks]) => { window.app.nodeOutputs = { [String(id)]: { drum_picks: picks } }; }", [sampler, picks])
    shown = panel_rows(page, sampler, "drum_picks")
    assert shown["summary"] == "1 prompts picked" and shown["prompts"] == ["a kept prompt"] and shown["weights"] == ["2.50"]


def test_readme_screenshot_of_the_example_workflow(page, workflows, artifacts, renderer):
    """The example workflow on the shipped example history, run: test-artifacts/web/screenshot.png (docs/screenshot.png,
    the classic renderer, ComfyUI's default) and screenshot-vue.png."""
    finished = run_tiny(page, workflows["drum_sd15"])
    assert finished["type"] == "execution_success", finished
    history, sampler, conditioner = (only(page, kind) for kind in ("DrUMHistoryLoader", "DrUMCoresetSampler", "DrUMConditioner"))
    for node, widget in ((history, "drum_history_preview"), (sampler, "drum_picks"), (conditioner, "drum_picks")):
        wait_for_prompts(page, node, widget)  # from ComfyUI's cache when an earlier test ran this workflow
    assert panel_rows(page, history, "drum_history_preview")["summary"].endswith("prompts · pasted text")
    profile = only(page, "DrUMProfilePreview")  # its node shows the map (the picture goes to a Save Image)
    page.wait_for_function(
        "(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_map').element.querySelector('circle')", arg=profile
    )
    sizes = page.evaluate("(ids) => ids.map((id) => [...window.app.graph.getNodeById(id).size])", [history, sampler, conditioner])
    x = [0, sizes[0][0] + 40, sizes[0][0] + sizes[1][0] + 80]
    below = sizes[1][1] + 80  # under the Coreset Sampler and its title bar
    layout = {history: (x[0], 0, 440), sampler: (x[1], 0, 340), conditioner: (x[2], 0, 440), profile: (x[1], below, 300)}
    keep_only(page, layout, scale=0.8)
    picture = artifacts / ("screenshot.png" if renderer == "classic" else f"screenshot-{renderer}.png")
    save_screenshot(page, picture, nodes=list(layout), palette=True)
    assert picture.stat().st_size < 300_000


def test_history_tools_and_profile_save_show_their_outputs(page, renderer):
    """History Loader → Split → Mix (likes and dislikes) → Coreset Sampler → Profile Save, built and run in the page
    (on a history of its own: ComfyUI does not resend the outputs of nodes it takes from its cache)."""
    history = DROPPED_HISTORY + f"a prompt only this renderer's run has, {renderer} {RUN}\t1\n"
    ids = page.evaluate(
        """([checkpoint, history, name]) => {
            const { app } = window;
            app.graph.clear();
            const add = (type, values = {}) => {
                const node = window.LiteGraph.createNode(type);
                app.graph.add(node);
                for (const [widget, value] of Object.entries(values)) node.widgets.find((w) => w.name === widget).value = value;
                return node;
            };
            const link = (from, slot, to, input) => from.connect(slot, to, to.findInputSlot(input));
            const loader = add("CheckpointLoaderSimple", { ckpt_name: checkpoint });
            const text = add("DrUMHistoryLoader", { file: "none", text: history });
            const split = add("DrUMHistorySplit");
            const mix = add("DrUMHistoryMix", { mix: 0.5 });
            const sampler = add("DrUMCoresetSampler", { ratio: 0.5 });
            const save = add("DrUMProfileSave", { name: name });
            link(text, 0, split, "history");
            link(split, 0, mix, "history_a");
            link(split, 1, mix, "history_b");
            link(mix, 0, sampler, "history");
            link(loader, 1, sampler, "clip");
            link(sampler, 0, save, "history");
            return { split: split.id, mix: mix.id, save: save.id };
        }""",
        [TINY_RUN["CheckpointLoaderSimple"]["ckpt_name"], history, f"tools_{renderer}_{RUN}"],
    )
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    split = panel_rows(page, ids["split"], "drum_split")
    prompts = sorted(line.split("\t")[0] for line in history.splitlines())
    assert split["summary"] == "4 likes · 2 dislikes"  # ratings 5 4 5 3 | 2 1 at the threshold 3
    assert sorted(split["prompts"]) == prompts
    mix = panel_rows(page, ids["mix"], "drum_history_preview")
    assert re.fullmatch(rf"{len(prompts)} prompts · .+", mix["summary"]) and sorted(mix["prompts"]) == prompts
    saved = panel_rows(page, ids["save"], "drum_profile")
    assert saved["summary"].startswith(f"Saved tools_{renderer}_{RUN}") and saved["prompts"] == []
