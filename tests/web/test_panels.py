"""The pack's panels as an artist sees them, in real Chromium on both renderers: bounded panels that scroll
inside and never push a node over its neighbours, on every template, after a run with a long history."""

from __future__ import annotations

import pytest
from comfy_page import load_workflow, next_frames, run_graph, set_widgets, vue_nodes

pytestmark = pytest.mark.web

LONG = 60  # prompts in the long history: more than a panel shows, more than its height holds
LONG_PROMPTS = [
    f"prompt {i:02d}: " + ("a watercolor fox in a misty forest, soft morning light, " * (1 + i % 3)).strip() for i in range(LONG)
]
LONG_HISTORY = "".join(f"{prompt}\t{1 + i % 5}\n" for i, prompt in enumerate(LONG_PROMPTS))
PANEL_MAX_HEIGHT = 240  # graph units (px at zoom 1): no panel is taller


def rows(prompts: list[str]) -> list[dict]:
    return [{"prompt": prompt, "weight": 1 + i % 5} for i, prompt in enumerate(prompts)]


def long_outputs(picks: int = 18) -> dict[str, dict]:
    """What each panel node's run sends on the long history (the ui outputs of nodes/*.py), by node type."""
    history = {"count": LONG, "source": "long.txt", "preview": rows(LONG_PROMPTS[:50])}
    picked = rows(LONG_PROMPTS[:picks])
    half = {"count": LONG // 2, "source": "long.txt", "preview": rows(LONG_PROMPTS[: LONG // 2])}
    return {
        "DrUMHistoryLoader": {"drum_history": [history]},
        "DrUMHistoryMix": {"drum_history": [history]},
        "DrUMHistorySplit": {"drum_split": [{"likes": half, "dislikes": half}]},
        "DrUMCoresetSampler": {"drum_picks": picked},
        "DrUMProfileLoad": {"drum_picks": picked},
        "DrUMConditioner": {"drum_conditioning": [{"family": "sd1", "degrees": [0.3], "references": picked}]},
    }


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


@pytest.mark.parametrize("name", ["drum_sd15", "drum_sdxl", "drum_sd3", "drum_flux", "drum_alpha_sweep", "drum_dislikes", "drum_style_mix"])
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
    after = [text_box_height(page, node) for node in loader_ids]
    assert after == pytest.approx(before, abs=1) and all(height >= 60 for height in after), "the text box changed size"
    fit_view_screenshot(page, artifacts / f"template-{name}-{renderer}-after-run.png")


def test_a_real_run_on_a_long_history_keeps_the_layout(page, workflows, artifacts, renderer):
    workflow = workflows["drum_sd15"]
    load_workflow(page, workflow)
    ids = {node["type"]: node["id"] for node in workflow["nodes"]}
    set_widgets(page, ids["CheckpointLoaderSimple"], {"ckpt_name": "tiny_sd15.safetensors"})
    set_widgets(page, ids["EmptyLatentImage"], {"width": 64, "height": 64})
    set_widgets(page, ids["KSampler"], {"steps": 2})
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
