"""The pack's panels as an artist sees them, in real Chromium on both renderers: bounded panels that scroll
inside and never push a node over its neighbours, on every template, after a run with a long history."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from comfy_page import (
    SHOWN_TEXT,
    load_workflow,
    next_frames,
    nodes_of_type,
    panel_rows,
    reload,
    run_graph,
    set_widgets,
    vue_nodes,
    wait_for_prompts,
)
from support.workflows import TEMPLATES  # the slugs (drum_sd15, ...); the UI files are named by their titles

pytestmark = pytest.mark.web

LONG = 60  # prompts in the long history: more than a panel shows, more than its height holds
LONG_PROMPTS = [
    f"prompt {i:02d}: " + ("a watercolor fox in a misty forest, soft morning light, " * (1 + i % 3)).strip() for i in range(LONG)
]
LONG_HISTORY = "".join(f"{prompt}\t{1 + i % 5}\n" for i, prompt in enumerate(LONG_PROMPTS))
PANEL_MAX_HEIGHT = 300  # graph units (px at zoom 1): no panel is taller (the profile map is the tallest)


def rows(prompts: list[str]) -> list[dict]:
    return [{"prompt": prompt, "weight": 1 + i % 5} for i, prompt in enumerate(prompts)]


def long_outputs(picks: int = 18) -> dict[str, dict]:
    """What each panel node's run sends on the long history (the ui outputs of nodes/*.py), by node type."""
    history = {"count": LONG, "source": "long.txt", "preview": rows(LONG_PROMPTS[:50])}
    picked = rows(LONG_PROMPTS[:picks])
    half = {"count": LONG // 2, "source": "long.txt", "preview": rows(LONG_PROMPTS[: LONG // 2])}
    return {
        "DrUMHistoryLoader": {"drum_history": [history]},
        "DrUMHistoryMix": {"drum_history": [history | {"mix": t} for t in (0.0, 0.5, 1.0)]},  # a sweep: 150 rows
        "DrUMHistorySplit": {"drum_split": [{"likes": half, "dislikes": half}]},
        "DrUMCoresetSampler": {"drum_picks": picked},
        "DrUMProfileLoad": {"drum_picks": picked},
        "DrUMConditioner": {"drum_conditioning": [{"family": "sd1", "degrees": [0.3], "references": picked}]},
        "DrUMTasteCheck": {"drum_taste": [taste_report(65)]},
        "DrUMOutputsHistory": {
            "drum_outputs": [
                {
                    "folder": "(all outputs)",
                    "count": LONG,
                    "read": LONG + 4,
                    "skipped": {"no metadata": 3, "not an image": 1},
                    "queue": 2,
                    "newest": rows(LONG_PROMPTS[:20]),
                }
            ]
        },
    }


def taste_report(degrees: int) -> dict:
    """A DrUM Taste Check ui output (drum_core.taste.TasteReport.as_dict) with `degrees` rows, the largest sweep."""
    keys = ("target", "history", "control_target", "control_history", "target_loss", "gain", "control_gain", "edge")
    table = [{"degree": i / (degrees - 1), **dict.fromkeys(keys, 12.5), "allowed": True} for i in range(degrees)]
    return {"rows": table, "best": table[3], "recommended": table[3]["degree"], "held_out": LONG_PROMPTS[:20], "control": "long.txt"}


def fit_view_screenshot(page, path) -> None:
    """The whole graph as the Fit View command shows it (what a template looks like when opened), saved to `path`."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    next_frames(page)
    page.evaluate("() => window.app.extensionManager.toast.removeAll?.()")
    page.wait_for_timeout(200)
    page.screenshot(path=str(path))


def show_outputs(page, outputs: dict[str, dict]) -> int:
    """Hands each panel node its run's ui output as the frontend does on `executed` (node.onExecuted); how many got one."""
    count = page.evaluate(
        """(outputs) => {
            let count = 0;
            for (const node of window.app.graph.nodes) {
                const output = outputs[node.comfyClass];
                if (output) { node.onExecuted?.(output); count += 1; }
            }
            window.app.graph.setDirtyCanvas(true, true);
            return count;
        }""",
        outputs,
    )
    next_frames(page)
    return count


def node_boxes(page) -> list[dict]:
    """{id, type, left, top, right, bottom} of every node as drawn: its element (Vue) or its bounding box with the title (classic)."""
    next_frames(page)
    return page.evaluate(
        """() => window.app.graph.nodes.map((node) => {
            const element = document.querySelector(`[data-node-id="${node.id}"]`);
            if (element) {
                const r = element.getBoundingClientRect();
                return { id: node.id, type: node.type, left: r.left, top: r.top, right: r.right, bottom: r.bottom };
            }
            const [x, y, w, h] = node.getBounding();
            return { id: node.id, type: node.type, left: x, top: y, right: x + w, bottom: y + h };
        })"""
    )


def overlaps(boxes: list[dict]) -> list[str]:
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a["left"] < b["right"] - 1 and b["left"] < a["right"] - 1 and a["top"] < b["bottom"] - 1 and b["top"] < a["bottom"] - 1:
                found.append(f"{a['type']} #{a['id']} overlaps {b['type']} #{b['id']}")
    return found


def bring_on_screen(page, node: int) -> None:
    """Zoom 1 with node `node` near the top left of the canvas."""
    page.evaluate(
        """(id) => {
            const { canvas, graph } = window.app;
            const node = graph.getNodeById(id);
            canvas.ds.scale = 1;
            canvas.ds.offset = [200 - node.pos[0], 120 - node.pos[1]];
            canvas.setDirty(true, true);
        }""",
        node,
    )
    next_frames(page)


def panels_reach_every_row(page) -> list[str]:
    """Problems with the panels: one taller than PANEL_MAX_HEIGHT (graph units), or a listed row that cannot be
    scrolled into view inside its panel's list. Each panel node is brought on screen first (the classic renderer
    hides the DOM widgets of nodes off screen)."""
    problems = []
    ids = page.evaluate(
        "() => window.app.graph.nodes.filter((n) => n.widgets?.some((w) => w.element?.classList?.contains('drum-panel'))).map((n) => n.id)"
    )
    for node in ids:
        bring_on_screen(page, node)
        problems += page.evaluate(
            """([id, maxHeight]) => {
                const problems = [];
                const node = window.app.graph.getNodeById(id);
                const scale = window.app.canvas.ds.scale;
                for (const widget of node.widgets) {
                    const root = widget.element;
                    if (!root?.classList?.contains("drum-panel")) continue;
                    const name = `${node.type} #${node.id} ${widget.name}`;
                    const box = root.getBoundingClientRect();
                    if (box.height / scale > maxHeight + 1) problems.push(`${name}: ${Math.round(box.height / scale)} units tall`);
                    const list = root.querySelector(".drum-list");
                    const frame = list.getBoundingClientRect();
                    if (frame.height < 60 * scale) problems.push(`${name}: list only ${Math.round(frame.height / scale)} units tall`);
                    for (const row of list.children) {
                        row.scrollIntoView({ block: "nearest" });
                        const r = row.getBoundingClientRect();
                        const visible = Math.min(r.bottom, frame.bottom) - Math.max(r.top, frame.top);
                        if (visible < Math.min(r.height, frame.height) - 1) problems.push(`${name}: row "${row.textContent.slice(0, 30)}" out of reach`);
                    }
                    list.scrollTop = 0;
                }
                return problems;
            }""",
            [node, PANEL_MAX_HEIGHT],
        )
    return problems


def text_box_height(page, node: int) -> float:
    bring_on_screen(page, node)
    return page.evaluate(
        """(id) => {
            const area = document.querySelector(`[data-node-id="${id}"] textarea`)  // the Vue renderer's own text box
                ?? window.app.graph.getNodeById(id).widgets.find((w) => w.name === "text").element;
            return area.getBoundingClientRect().height / window.app.canvas.ds.scale;
        }""",
        node,
    )


def open_on_tiny_models(page, workflow: dict) -> dict:
    """Open an SD1.5 template in the page set to run on the tests' tiny checkpoint (64 px, 2 steps); its node ids by type."""
    load_workflow(page, workflow)
    ids = {node["type"]: node["id"] for node in workflow["nodes"]}
    set_widgets(page, ids["CheckpointLoaderSimple"], {"ckpt_name": "tiny_sd15.safetensors"})
    set_widgets(page, ids["EmptyLatentImage"], {"width": 64, "height": 64})
    set_widgets(page, ids["KSampler"], {"steps": 2})
    return ids


@pytest.mark.parametrize("name", TEMPLATES)
def test_long_outputs_never_push_nodes_over_each_other(page, workflows, artifacts, renderer, name):
    load_workflow(page, workflows[name])
    fit_view_screenshot(page, artifacts / f"template-{name}-{renderer}.png")
    page.evaluate(
        "() => { window.app.canvas.ds.scale = 1; window.app.canvas.ds.offset = [0, 0]; window.app.graph.setDirtyCanvas(true, true); }"
    )
    assert overlaps(node_boxes(page)) == [], f"{name} ({renderer}) as opened"
    loader_ids = page.evaluate("() => window.app.graph.nodes.filter((n) => n.comfyClass === 'DrUMHistoryLoader').map((n) => n.id)")
    before = [text_box_height(page, node) for node in loader_ids]
    assert show_outputs(page, long_outputs()) >= 2
    assert overlaps(node_boxes(page)) == [], f"{name} ({renderer}) after a run on {LONG} prompts"
    assert panels_reach_every_row(page) == []
    for node in nodes_of_type(page, "DrUMTasteCheck"):  # the per-degree table, one row per degree, the verdict on top
        shown = panel_rows(page, node["id"], "drum_taste")
        assert shown["summary"] == "Recommended degree 0.05: edge 12.50 over the control at a target loss of 12.5 %"
        assert len(shown["prompts"]) == 65 and shown["weights"][:2] == ["0.00", "0.02"]
    after = [text_box_height(page, node) for node in loader_ids]
    assert after == pytest.approx(before, abs=1) and all(height >= 60 for height in after), "the text box changed size"
    fit_view_screenshot(page, artifacts / f"template-{name}-{renderer}-after-run.png")


def test_a_real_run_on_a_long_history_keeps_the_layout(page, workflows, artifacts, renderer):
    workflow = workflows["drum_sd15"]
    ids = open_on_tiny_models(page, workflow)
    set_widgets(page, ids["DrUMHistoryLoader"], {"text": LONG_HISTORY})
    before = text_box_height(page, ids["DrUMHistoryLoader"])
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    page.wait_for_function(
        "(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_history_preview').element"
        ".querySelectorAll('.drum-prompt').length === 50",
        arg=ids["DrUMHistoryLoader"],
    )
    if vue_nodes(page):
        page.wait_for_timeout(300)  # the Vue nodes settle their size after the panels filled
    assert overlaps(node_boxes(page)) == []
    assert panels_reach_every_row(page) == []
    assert text_box_height(page, ids["DrUMHistoryLoader"]) == pytest.approx(before, abs=1)
    page.screenshot(path=str(artifacts / f"long-history-{renderer}.png"))


SHORT_LIST = 3  # a list of this many rows shows every one whole, without scrolling (drum_sd15 picks 3 of its 10 prompts)


def rows_cut_off(page, node: int, widget: str) -> list[str]:
    """The rows of a panel's list not wholly inside the list's frame as shown (scrolled to the top), at zoom 1."""
    bring_on_screen(page, node)
    return page.evaluate(
        """([id, name]) => {
            const root = window.app.graph.getNodeById(id).widgets.find((w) => w.name === name).element;
            const list = root.querySelector(".drum-list");
            list.scrollTop = 0;
            const frame = list.getBoundingClientRect();
            return Array.from(list.children)
                .filter((row) => { const r = row.getBoundingClientRect(); return r.top < frame.top - 1 || r.bottom > frame.bottom + 1; })
                .map((row) => row.textContent.slice(0, 40));
        }""",
        [node, widget],
    )


def test_a_short_list_shows_every_row_whole(page, workflows, renderer):
    """The issue's classic Conditioner list was about 2.5 rows tall: the third of 3 picks was cut mid-line."""
    ids = open_on_tiny_models(page, workflows["drum_sd15"])
    # a seed of this run's own: ComfyUI samples again and resends the conditioner's output even if it is cached
    set_widgets(page, ids["KSampler"], {"seed": secrets.randbelow(2**31)})
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    conditioner = ids["DrUMConditioner"]
    wait_for_prompts(page, conditioner, "drum_picks")
    assert len(panel_rows(page, conditioner, "drum_picks")["prompts"]) == SHORT_LIST
    assert rows_cut_off(page, conditioner, "drum_picks") == []


def test_a_mix_sweep_lists_each_mix_and_each_run_after_it(page, workflows, artifacts, renderer):
    """drum_style_mix run for real: its History Mix sweeps 0, 0.5, 1, so its panel lists the three mixed histories and
    the Conditioner's panel its three runs (one per item of the list), in order, and nothing overlaps."""
    workflow = workflows["drum_style_mix"]
    ids = open_on_tiny_models(page, workflow)
    loader = next(node["id"] for node in workflow["nodes"] if node["type"] == "DrUMHistoryLoader")
    text = next(node["widgets_values"][1] for node in workflow["nodes"] if node["id"] == loader)
    # a prompt of this renderer's run only: ComfyUI resends no outputs of the nodes before one it takes from its cache
    set_widgets(page, loader, {"text": text + f"a prompt only the {renderer} run has {RUN_TAG}\t5\n"})
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    mix, conditioner = ids["DrUMHistoryMix"], ids["DrUMConditioner"]
    wait_for_prompts(page, mix, "drum_history_preview")
    wait_for_prompts(page, conditioner, "drum_picks")
    mixes = panel_rows(page, mix, "drum_history_preview")
    assert mixes["summary"] == "3 mixes (0, 0.5, 1): the nodes after this one run once per mix, in this order"
    assert [heading.split(" · ")[0] for heading in mixes["headings"]] == ["mix 0", "mix 0.5", "mix 1"]
    runs = panel_rows(page, conditioner, "drum_picks")
    assert runs["summary"] == "3 runs, one per history of the list in"
    assert [heading.split(" · ")[0] for heading in runs["headings"]] == ["1. sd1", "2. sd1", "3. sd1"]
    assert all(heading.endswith("α 0.50") for heading in runs["headings"]), runs["headings"]
    if vue_nodes(page):
        page.wait_for_timeout(300)  # the Vue nodes settle their size after the panels filled
    assert overlaps(node_boxes(page)) == []
    assert panels_reach_every_row(page) == []
    fit_view_screenshot(page, artifacts / f"style-mix-run-{renderer}.png")


RUN_TAG = secrets.token_hex(4)
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
REFUSED = {  # name -> (content, words the panel must say)
    "photo_{tag}.txt": (PNG_BYTES, "is an image (PNG), not a prompt history"),
    "blob_{tag}.txt": (b"abc\x00\x01\x02def\n", "is a binary file, not text"),
    "empty_{tag}.txt": (b"\n \n", "is empty"),
    "broken_{tag}.json": (b'["a prompt",\n  "another"\n', "line 3: broken JSON"),
    "latin_{tag}.txt": ("caf\u00e9 au lait\n".encode("latin-1"), "line 1: byte 0xe9 at column 4 is not UTF-8"),
}


def drop_bytes(page, node: int, name: str, content: bytes) -> None:
    """Drops a file of raw bytes on node `node`'s history panel, as from the desktop."""
    page.evaluate(
        """([id, name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name));
            const target = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "drum_history_preview").element;
            for (const type of ["dragover", "drop"]) target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        [node, name, base64.b64encode(content).decode()],
    )


def history_panel(page, node: int) -> dict:
    return page.evaluate(
        """(id) => {
            const root = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "drum_history_preview").element;
            return { text: ("""
        + SHOWN_TEXT
        + """)(root), failed: root.classList.contains("drum-failed"), color: getComputedStyle(root.querySelector(".drum-summary")).color };
        }""",
        node,
    )


def test_bad_files_are_refused_at_upload_in_words_that_fit(page, workflows, input_dir, renderer):
    load_workflow(page, workflows["drum_sd15"])
    loader = page.evaluate("() => window.app.graph.nodes.find((n) => n.comfyClass === 'DrUMHistoryLoader').id")
    file_value = (
        "() => window.app.graph.nodes.find((n) => n.comfyClass === 'DrUMHistoryLoader').widgets.find((w) => w.name === 'file').value"
    )
    for template, (content, words) in REFUSED.items():
        name = template.format(tag=f"{renderer}_{RUN_TAG}")
        drop_bytes(page, loader, name, content)
        page.wait_for_function(
            "([id, name]) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_history_preview').element"
            ".textContent.includes(`Not selected: ${name}`)",
            arg=[loader, name],
        )
        shown = history_panel(page, loader)
        assert shown["failed"] and words in shown["text"], (name, shown)
        assert str(input_dir) not in shown["text"] and "/" not in shown["text"] and "DrUM" not in shown["text"], shown
        assert "UTF-8" not in shown["text"] or name.startswith("latin"), f"advice that does not fit: {shown}"
        assert page.evaluate(file_value) == "none", "a refused file was selected"
        assert page.locator(".drum-panel.drum-failed").count() == 1, "the error is shown in more than one place"
    red = history_panel(page, loader)["color"]
    good = f"good_{renderer}_{RUN_TAG}.txt"
    drop_bytes(page, loader, good, b"a red fox in snow\t4\na blue lake\n")
    page.wait_for_function(f"() => ({file_value})() === '{good}'")
    shown = history_panel(page, loader)
    assert not shown["failed"] and shown["text"] == f"Uploaded {good}: 2 prompts. Run the graph to use it.", shown
    assert shown["color"] != red, "the next upload's notice is still red"


def test_the_check_route_reads_only_history_files_in_the_input_folder(page, input_dir):
    (input_dir.parent / "outside.txt").write_text("a prompt outside the input folder\n", encoding="utf-8")
    answers = page.evaluate(
        """async (names) => {
            const answers = [];
            for (const name of names) {
                const response = await fetch("/drum/history/check", { method: "POST", body: JSON.stringify({ name }) });
                answers.push([response.status, await response.json()]);
            }
            return answers;
        }""",
        ["../outside.txt", str(input_dir.parent / "outside.txt"), "missing.txt", "example_history.txt", None],
    )
    assert [status for status, _ in answers] == [400, 400, 400, 200, 400], answers
    assert answers[3][1]["ok"] is True and answers[3][1]["count"] > 0
    echoed = answers[1]  # the absolute name the client sent comes back in its own error, nothing else of the server's
    assert all(str(input_dir.parent) not in json.dumps(answer) for _, answer in answers if answer is not echoed[1]), answers


def stale_text(page, node: int, widget: str) -> str | None:
    """The panel's "from the previous run" reason, or None when it is not marked stale."""
    return page.evaluate(
        """([id, name]) => {
            const root = window.app.graph.getNodeById(id).widgets.find((w) => w.name === name).element;
            return root.classList.contains("drum-stale-output") ? root.querySelector(".drum-stale").textContent : null;
        }""",
        [node, widget],
    )


def test_panels_say_when_an_input_changed_since_their_run(page, workflows, renderer):
    workflow = workflows["drum_sd15"]
    ids = open_on_tiny_models(page, workflow)
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    loader, sampler, conditioner = ids["DrUMHistoryLoader"], ids["DrUMCoresetSampler"], ids["DrUMConditioner"]
    for node, widget in ((loader, "drum_history_preview"), (sampler, "drum_picks"), (conditioner, "drum_picks")):
        page.wait_for_function(
            "([id, name]) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === name).element.querySelectorAll('.drum-prompt').length > 0",
            arg=[node, widget],
        )
    page.wait_for_timeout(400)
    assert [stale_text(page, node, widget) for node, widget in ((loader, "drum_history_preview"), (sampler, "drum_picks"))] == [None, None]

    # α moved on the conditioner: only its panel is from the previous run
    page.locator(".drum-degree:not(.drum-inactive) .drum-degree-slider").fill("0.75")
    page.wait_for_function(
        "(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_picks').element.classList.contains('drum-stale-output')",
        arg=conditioner,
    )
    assert stale_text(page, conditioner, "drum_picks") == "From the previous run: DrUM Conditioner changed since."
    assert stale_text(page, sampler, "drum_picks") is None

    # another history pasted: every panel downstream of the loader is from the previous run
    set_widgets(page, loader, {"text": "a new prompt\t5\n"})
    page.evaluate("() => window.comfyAPI.api.api.dispatchCustomEvent('graphChanged', {})")  # what the change tracker sends
    page.wait_for_function(
        "(id) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_picks').element.classList.contains('drum-stale-output')",
        arg=sampler,
    )
    for node, widget in ((loader, "drum_history_preview"), (sampler, "drum_picks"), (conditioner, "drum_picks")):
        assert stale_text(page, node, widget) in (
            "From the previous run: DrUM History Loader changed since.",
            "From the previous run: DrUM Conditioner changed since.",
        )
    assert stale_text(page, sampler, "drum_picks") == "From the previous run: DrUM History Loader changed since."
    opacity = page.evaluate(
        "(id) => getComputedStyle(window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_picks').element"
        ".querySelector('.drum-list')).opacity",
        sampler,
    )
    assert float(opacity) < 1, "a stale panel is not dimmed"


def inner_panel(page, subgraph_node: int, node_type: str, widget: str) -> dict:
    """{summary, prompts} of the panel of the `node_type` node inside subgraph node `subgraph_node`."""
    return page.evaluate(
        """([outer, type, name]) => {
            const node = window.app.rootGraph.getNodeById(outer).subgraph.nodes.find((n) => n.comfyClass === type);
            const root = node.widgets.find((w) => w.name === name).element;
            return { summary: root.querySelector(".drum-summary").textContent, prompts: [...root.querySelectorAll(".drum-prompt")].map((e) => e.textContent) };
        }""",
        [subgraph_node, node_type, widget],
    )


def test_panels_inside_a_subgraph_are_filled_and_refilled(page, workflows, renderer):
    workflow = workflows["drum_sd15"]
    ids = open_on_tiny_models(page, workflow)
    set_widgets(
        page, ids["DrUMHistoryLoader"], {"text": f"a prompt only the subgraph run has, {renderer} {RUN_TAG}\t3\n" + LONG_HISTORY[:2000]}
    )
    outer = page.evaluate(
        """(id) => {
            const { app } = window;
            const node = app.rootGraph.getNodeById(id);
            const { node: subgraphNode } = app.rootGraph.convertToSubgraph(new Set([node]));
            app.rootGraph.setDirtyCanvas(true, true);
            return subgraphNode.id;
        }""",
        ids["DrUMCoresetSampler"],
    )
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    page.wait_for_function(
        """(outer) => window.app.rootGraph.getNodeById(outer).subgraph.nodes.find((n) => n.comfyClass === "DrUMCoresetSampler")
            .widgets.find((w) => w.name === "drum_picks").element.querySelectorAll(".drum-prompt").length > 0""",
        arg=outer,
    )
    shown = inner_panel(page, outer, "DrUMCoresetSampler", "drum_picks")
    assert shown["summary"] == f"{len(shown['prompts'])} prompts picked"

    reload(page)  # outputs live in the page only: the panel inside the subgraph is refilled from /history too
    page.wait_for_function(
        """(outer) => window.app.rootGraph?.getNodeById(outer)?.subgraph?.nodes.find((n) => n.comfyClass === "DrUMCoresetSampler")
            ?.widgets.find((w) => w.name === "drum_picks").element.querySelectorAll(".drum-prompt").length > 0""",
        arg=outer,
    )
    assert inner_panel(page, outer, "DrUMCoresetSampler", "drum_picks") == shown


def test_the_profile_map_is_drawn_in_the_page_and_reads_on_hover(page, workflows, artifacts, renderer):
    workflow = workflows["drum_sd15"]
    ids = open_on_tiny_models(page, workflow)
    prompts = [f"map prompt {i} of the {renderer} run {RUN_TAG}" for i in range(12)]
    set_widgets(page, ids["DrUMHistoryLoader"], {"text": "".join(f"{p}\t{1 + i % 5}\n" for i, p in enumerate(prompts))})
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    preview = ids["DrUMProfilePreview"]
    map_root = "window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_map').element"
    page.wait_for_function(f"(id) => {map_root}.querySelectorAll('circle').length === 12", arg=preview)
    shown = page.evaluate(
        f"""(id) => {{
            const root = {map_root};
            return {{
                summary: root.querySelector(".drum-summary").textContent,
                prompts: [...root.querySelectorAll("circle")].map((c) => c.dataset.prompt).sort(),
                titles: [...root.querySelectorAll("circle title")].map((t) => t.textContent),
                picks: root.querySelectorAll("circle.drum-map-pick").length,
                ranks: [...root.querySelectorAll(".drum-map-rank")].map((t) => Number(t.textContent)),
            }};
        }}""",
        preview,
    )
    picked = panel_picks(page, ids["DrUMCoresetSampler"])
    assert shown["prompts"] == sorted(prompts)
    assert shown["picks"] == len(picked) > 0 and sorted(shown["ranks"]) == list(range(1, len(picked) + 1))
    # drum_sd15 has no Degree Slider: the map names the Conditioner's own degree (its degrees output, linked)
    assert shown["summary"].startswith(f"α 0.3 (how much of this taste goes in) · 12 prompts · {len(picked)} picked"), shown["summary"]
    assert f"pick 1: {picked[0]}" in shown["titles"]
    assert "PCA" not in shown["summary"] and "p=" not in shown["summary"]

    radii = page.evaluate(f"(id) => [...{map_root}.querySelectorAll('circle')].map((c) => Number(c.getAttribute('r')))", preview)
    assert radii == sorted(radii, reverse=True)  # larger dots first: no dot is hidden under a larger one drawn after it

    bring_on_screen(page, preview)
    # the first prompt whose dot is the topmost element at its own centre (with random weights two dots can coincide)
    hovered = page.evaluate(
        f"""(id) => [...{map_root}.querySelectorAll('circle')].find((c) => {{
            const box = c.getBoundingClientRect();
            return document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2) === c;
        }})?.dataset.prompt""",
        preview,
    )
    assert hovered in prompts
    page.locator(f'[data-drum-panel="drum_map"] circle[data-prompt="{hovered}"]').hover()
    readout = page.locator('[data-drum-panel="drum_map"] .drum-map-readout')
    assert hovered in readout.inner_text()
    page.screenshot(path=str(artifacts / f"profile-map-{renderer}.png"))

    # α moved on the Conditioner after the run: the map (its α, its picture) is from the previous run
    assert stale_text(page, preview, "drum_map") is None
    bring_on_screen(page, ids["DrUMConditioner"])
    page.locator(".drum-degree:not(.drum-inactive) .drum-degree-slider").fill("0.75")
    page.wait_for_function(f"(id) => {map_root}.classList.contains('drum-stale-output')", arg=preview)
    assert stale_text(page, preview, "drum_map") == "From the previous run: DrUM Conditioner changed since."

    # a Preview after a History Mix sweep runs once per mix: the page draws the first map and says how many there are
    heading = page.evaluate(
        f"""async (id) => {{
            const history = await (await fetch("/api/history?max_items=1")).json();
            const [run] = Object.values(history);
            const node = window.app.graph.getNodeById(id);
            const map = run.outputs[String(id)].drum_map[0];
            node.onExecuted({{ drum_map: [map, map, map] }});
            return {map_root}.querySelector(".drum-summary").textContent;
        }}""",
        preview,
    )
    assert heading.startswith("map 1 of 3 (one per history of the list in; the IMAGE output has them all) · α 0.3"), heading


def test_the_profile_map_says_the_degrees_the_images_were_drawn_at(page, workflows, renderer):
    """drum_alpha_sweep links its Degree Slider to the Profile Preview: after a real run the map's heading names
    every degree of the sweep (the IMAGE's legend does too: tests/test_profile_picture.py)."""
    workflow = workflows["drum_alpha_sweep"]
    ids = open_on_tiny_models(page, workflow)
    prompts = [f"sweep map prompt {i} of the {renderer} run {RUN_TAG}" for i in range(8)]
    set_widgets(page, ids["DrUMHistoryLoader"], {"text": "".join(f"{p}\t{1 + i % 5}\n" for i, p in enumerate(prompts))})
    finished = run_graph(page)
    assert finished["type"] == "execution_success", finished
    map_root = "window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_map').element"
    preview = ids["DrUMProfilePreview"]
    page.wait_for_function(f"(id) => {map_root}.querySelectorAll('circle').length === 8", arg=preview)
    summary = page.evaluate(f"(id) => {map_root}.querySelector('.drum-summary').textContent", preview)
    assert summary.startswith("α 0, 0.3, 0.6, 0.9 (how much of this taste goes in) · 8 prompts"), summary


def panel_picks(page, node: int) -> list[str]:
    return page.evaluate(
        "(id) => [...window.app.graph.getNodeById(id).widgets.find((w) => w.name === 'drum_picks').element"
        ".querySelectorAll('.drum-prompt')].map((e) => e.textContent)",
        node,
    )
