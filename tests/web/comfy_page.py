"""Debian's Chromium driven by Playwright, and helpers that reach into the ComfyUI page.

The browser is the distribution's (tools/install_browser.sh), never Playwright's download; its
flags keep it off the network (the closed network refuses the background connections).
"""

from __future__ import annotations

import shutil
from pathlib import Path

BROWSER = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 900}
# What the frontend shows a first visitor: the template browser and the "Nodes 2.0" banner.
FIRST_VISIT_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
FIRST_VISIT_STORAGE = "localStorage.setItem('vueNodesBannerDismissed', 'true')"
# The frontend's setting that switches the classic canvas renderer to the Vue "Nodes 2.0" one.
RENDERERS = {"classic": {"Comfy.VueNodes.Enabled": False}, "vue": {"Comfy.VueNodes.Enabled": True}}
EXTENSION_LOADED = "() => window.app?.graph && window.app.extensions?.some((extension) => extension.name === 'DrUM.Page')"


def browser_path() -> str:
    """/usr/bin/chromium; raises with the fix when it is missing."""
    if not BROWSER.is_file() or shutil.which(str(BROWSER)) is None:
        raise RuntimeError(f"no browser at {BROWSER}: run `bash tools/install_browser.sh` (installs Debian's chromium)")
    return str(BROWSER)


def vue_nodes(page) -> bool:
    """Whether the page draws nodes with the Vue "Nodes 2.0" renderer (each node an element [data-node-id])."""
    return page.evaluate("() => window.app.extensionManager.setting.get('Comfy.VueNodes.Enabled') === true")


def node_client_point(page, node_id: int, y_offset: float = 40) -> tuple[float, float]:
    """Viewport coordinates of a point on node `node_id` away from its panels: `y_offset` below its top on the
    canvas, or the middle of its first widget in the Vue renderer."""
    return page.evaluate(
        """([id, yOffset]) => {
            const widget = document.querySelector(`[data-node-id="${id}"] [data-testid="node-widget"]`);
            if (widget) {
                const box = widget.getBoundingClientRect();
                return [box.left + box.width / 2, box.top + box.height / 2];
            }
            const canvas = window.app.canvas;
            const node = window.app.graph.getNodeById(id);
            const [x, y] = canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] + yOffset]);
            const box = canvas.canvas.getBoundingClientRect();
            return [box.left + x, box.top + y];
        }""",
        [node_id, y_offset],
    )


def drop_file_on_node(page, node_id: int, name: str, content: str) -> None:
    """Drags a file over node `node_id` (away from its panels) and drops it: the events go to whatever element is
    there, the canvas or the Vue node, as for a file dropped from the desktop."""
    x, y = node_client_point(page, node_id)
    page.evaluate(
        """([x, y, name, content]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([content], name, { type: "text/plain" }));
            const target = document.elementFromPoint(x, y);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, clientX: x, clientY: y, bubbles: true, cancelable: true }));
            }
        }""",
        [x, y, name, content],
    )


def drop_file_on_widget(page, node_id: int, widget: str, name: str, content: str) -> None:
    """Drags a file over a DOM widget's element of node `node_id` and drops it there."""
    page.evaluate(
        """([id, widget, name, content]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([content], name, { type: "text/plain" }));
            const target = window.app.graph.getNodeById(id).widgets.find((w) => w.name === widget).element;
            for (const type of ["dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [node_id, widget, name, content],
    )


def next_frames(page) -> None:
    page.evaluate("() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))")


def load_workflow(page, workflow: dict) -> None:
    """Opens a UI-format workflow as the "Open" menu does, and lets the page draw it."""
    page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
    next_frames(page)
    if vue_nodes(page):
        page.wait_for_function("(count) => document.querySelectorAll('[data-node-id]').length === count", arg=len(workflow["nodes"]))


def reload(page) -> None:
    """Reloads the page (the open workflow is restored by the frontend; node outputs are not)."""
    page.reload(wait_until="domcontentloaded")
    page.wait_for_function(EXTENSION_LOADED)
    next_frames(page)


def run_graph(page, timeout_ms: float = 300_000) -> dict:
    """Queues the open workflow as the Run button does; waits for its end: {"type": execution_success|error|interrupted, "detail"}."""
    page.evaluate(
        """() => {
            const api = window.comfyAPI.api.api;
            window.drumTestRun = null;
            const finish = (event) => { window.drumTestRun ??= { type: event.type, detail: event.detail }; };
            for (const type of ["execution_success", "execution_error", "execution_interrupted"]) api.addEventListener(type, finish, { once: true });
            return window.app.queuePrompt(0);
        }"""
    )
    page.wait_for_function("() => window.drumTestRun !== null", timeout=timeout_ms)
    return page.evaluate("() => window.drumTestRun")


def fit_view(page) -> dict:
    """Runs the Fit View command (Comfy.Canvas.FitView, animated) and waits until the view stops moving:
    {scale, threshold, low_quality, bounds, viewport}. `threshold` is the canvas scale below which the classic renderer
    stops drawing node titles and widget text (docs/comfyui.md: LiteGraph.Canvas.MinFontSizeForLOD / (NODE_TEXT_SIZE *
    sqrt(devicePixelRatio))); `bounds` [x, y, width, height] is what Fit View fitted (every node with its title bar);
    `viewport` [width, height] the canvas on screen."""
    return page.evaluate(
        """async () => {
            const { app } = window;
            const canvas = app.canvas;
            await app.extensionManager.command.execute("Comfy.Canvas.FitView");
            const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
            const view = () => JSON.stringify([canvas.ds.scale, ...canvas.ds.offset]);
            const start = performance.now();
            let last = null;
            for (;;) {  // the animation lasts 350 ms (DragAndScale.animateToBounds); then the view holds still
                await frame();
                const now = view();
                if (now === last && performance.now() - start > 400) break;
                last = now;
            }
            app.extensionManager.toast.removeAll?.();
            const lod = app.extensionManager.setting.get("LiteGraph.Canvas.MinFontSizeForLOD");
            const bounds = [Infinity, Infinity, -Infinity, -Infinity];
            for (const node of app.graph.nodes) {
                const [x, y, w, h] = node.boundingRect;
                bounds[0] = Math.min(bounds[0], x);
                bounds[1] = Math.min(bounds[1], y);
                bounds[2] = Math.max(bounds[2], x + w);
                bounds[3] = Math.max(bounds[3], y + h);
            }
            return {
                scale: canvas.ds.scale,
                threshold: lod / (window.LiteGraph.NODE_TEXT_SIZE * Math.sqrt(canvas.dpr ?? window.devicePixelRatio)),
                low_quality: canvas.low_quality,
                min_font_size_for_lod: lod,
                dpr: window.devicePixelRatio,
                canvas_dpr: canvas.dpr,
                bounds: [bounds[0], bounds[1], bounds[2] - bounds[0], bounds[3] - bounds[1]].map(Math.round),
                viewport: canvas.ds.getViewportSize().map(Math.round),
            };
        }"""
    )


def keep_only(page, layout: dict[int, tuple[float, float, float]], scale: float = 1.0) -> None:
    """Removes every other node and places these, {id: (x, y, min_height)}, zoomed to `scale` (for a clean picture)."""
    page.evaluate(
        """([layout, scale]) => {
            const { app } = window;
            for (const node of [...app.graph.nodes]) if (!(node.id in layout)) app.graph.remove(node);
            for (const [id, [x, y, height]] of Object.entries(layout)) {
                const node = app.graph.getNodeById(Number(id));
                node.pos = [x, y];
                node.setSize([node.size[0], Math.max(node.size[1], height)]);
            }
            app.canvas.ds.scale = scale;
            app.canvas.show_info = false;  // the canvas's corner statistics (fps, node count)
            app.canvas.ds.offset = [90 / scale, 130 / scale];
            app.extensionManager.toast.removeAll?.();
            app.graph.setDirtyCanvas(true, true);
        }""",
        [{str(k): v for k, v in layout.items()}, scale],
    )
    next_frames(page)


def widget_value(page, node_id: int, name: str):
    return page.evaluate("([id, name]) => window.app.graph.getNodeById(id).widgets.find((w) => w.name === name).value", [node_id, name])


def set_widgets(page, node_id: int, values: dict) -> None:
    """Sets widget values of node `node_id` as a script would (no UI events) and redraws."""
    page.evaluate(
        """([id, values]) => {
            const node = window.app.graph.getNodeById(id);
            for (const [name, value] of Object.entries(values)) node.widgets.find((w) => w.name === name).value = value;
            window.app.graph.setDirtyCanvas(true, true);
        }""",
        [node_id, values],
    )


def save_screenshot(page, path: Path, nodes: list[int] | None = None, palette: bool = False) -> None:
    """A PNG of the page, or of the box around `nodes` (margin included); `palette` makes it a small 256-colour PNG."""
    clip = None
    if nodes:
        clip = page.evaluate(
            """(ids) => {
                const canvas = window.app.canvas;
                const box = canvas.canvas.getBoundingClientRect();
                const corners = ids.flatMap((id) => {
                    const element = document.querySelector(`[data-node-id="${id}"]`);
                    if (element) {
                        const rect = element.getBoundingClientRect();
                        return [[rect.left - box.left, rect.top - box.top], [rect.right - box.left, rect.bottom - box.top]];
                    }
                    const node = window.app.graph.getNodeById(id);
                    const [x, y, width, height] = node.boundingRect;
                    return [canvas.ds.convertOffsetToCanvas([x, y]), canvas.ds.convertOffsetToCanvas([x + width, y + height])];
                });
                const left = Math.max(0, Math.min(...corners.map((c) => c[0])) - 16) + box.left;
                const top = Math.max(0, Math.min(...corners.map((c) => c[1])) - 16) + box.top;
                const right = Math.min(box.width, Math.max(...corners.map((c) => c[0])) + 16) + box.left;
                const bottom = Math.min(box.height, Math.max(...corners.map((c) => c[1])) + 16) + box.top;
                return { x: left, y: top, width: right - left, height: bottom - top };
            }""",
            nodes,
        )
    page.screenshot(path=str(path), clip=clip)
    if palette:
        from PIL import Image

        with Image.open(path) as image:
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


# A JavaScript function: the words an element shows, without the <style> each of the pack's widgets carries (web/js/styles.js)
SHOWN_TEXT = """(element) => {
    const shown = element.cloneNode(true);
    shown.querySelectorAll("style").forEach((style) => style.remove());
    return shown.textContent;
}"""


def nodes_of_type(page, node_type: str) -> list[dict]:
    """[{id, widgets: [{name, type, hidden, serialize, value, text}]}] of the graph's nodes of `node_type`."""
    return page.evaluate(
        """(type) => {
        const shownText = """
        + SHOWN_TEXT
        + """;
        return window.app.graph.nodes.filter((node) => node.comfyClass === type).map((node) => ({
            id: Number(node.id),
            widgets: node.widgets.map((widget) => ({
                name: widget.name,
                type: widget.type,
                hidden: Boolean(widget.hidden),
                serialize: widget.serialize !== false && widget.options?.serialize !== false,
                value: widget.value,
                text: widget.element ? shownText(widget.element) : null,
            })),
        }));
        }""",
        node_type,
    )


def panel_rows(page, node_id: int, widget: str) -> dict:
    """{summary, headings, prompts, weights, failed} shown by one of the extension's prompt panels."""
    return page.evaluate(
        """([id, name]) => {
            const node = window.app.graph.getNodeById(id);
            const root = node.widgets.find((widget) => widget.name === name).element;
            return {
                summary: root.querySelector(".drum-summary").textContent,
                headings: Array.from(root.querySelectorAll(".drum-heading"), (item) => item.textContent),
                prompts: Array.from(root.querySelectorAll(".drum-prompt"), (span) => span.textContent),
                weights: Array.from(root.querySelectorAll(".drum-weight"), (span) => span.textContent),
                failed: root.classList.contains("drum-failed"),
            };
        }""",
        [node_id, widget],
    )


def wait_for_prompts(page, node_id: int, widget: str) -> None:
    """Waits until a prompt panel lists prompts: the panels of nodes ComfyUI took from its cache are filled
    from /history after execution_success, so they may still be empty when the run's end event arrives."""
    page.wait_for_function(
        "([id, name]) => window.app.graph.getNodeById(id)?.widgets.find((w) => w.name === name).element"
        ".querySelectorAll('.drum-prompt').length > 0",
        arg=[node_id, widget],
    )


def page_for(browser, server, extension_url, page_errors, dialogs, artifacts, renderer: str, locale: str):
    """(A fixture body) the page with `renderer` in `locale`; afterwards a screenshot <artifacts>/<locale>-<renderer>.png."""
    page = open_page(browser, server, extension_url, page_errors, dialogs, {**RENDERERS[renderer], "Comfy.Locale": locale})
    yield page
    page.screenshot(path=str(artifacts / f"{locale}-{renderer}.png"))
    page.close()


def open_page(browser, server, extension_url, page_errors, dialogs, settings: dict):
    """A new ComfyUI page with these frontend settings, first-visit dialogs off, the pack's extension loaded."""
    server.post("/settings", {**FIRST_VISIT_SETTINGS, **settings})
    pack_scripts = extension_url.rsplit("/js/", 1)[0]
    page = browser.new_page()
    page.on("pageerror", lambda error: page_errors.append(f"{error}\n{error.stack}") if pack_scripts in (error.stack or "") else None)
    page.on(
        "console", lambda message: page_errors.append(message.text) if message.type == "error" and pack_scripts in message.text else None
    )
    # Leaving a modified workflow asks "leave the page?" (accepted: the tests reload on purpose); anything else is recorded.
    page.on(
        "dialog", lambda dialog: dialog.accept() if dialog.type == "beforeunload" else (dialogs.append(dialog.message), dialog.dismiss())
    )
    page.add_init_script(FIRST_VISIT_STORAGE)
    page.goto(server.url)
    page.wait_for_function(EXTENSION_LOADED)
    return page
