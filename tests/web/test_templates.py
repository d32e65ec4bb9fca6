"""Every template reads at a glance: opened and fitted to the window (the Fit View command), the canvas is zoomed in
far enough that the classic renderer still draws node titles and widget text, in both renderers, and its wires read
left to right (docs/comfyui.md, "Fit View and the zoom where text is drawn")."""

from __future__ import annotations

import pytest
from comfy_page import VIEWPORT, fit_view, load_workflow
from test_panels import TEMPLATES

pytestmark = pytest.mark.web

# (width, height, devicePixelRatio) of the window: the tests' (a desktop browser window at ratio 1) and a 1440x900
# laptop's browser window (ratio 2, where the canvas draws text down to a smaller zoom)
VIEWPORTS = {"desktop": (VIEWPORT["width"], VIEWPORT["height"], 1), "laptop": (1440, 789, 2)}


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_reads_at_fit_view(page, workflows, artifacts, renderer, name, viewport):
    width, height, dpr = VIEWPORTS[viewport]
    screen = page.context.new_cdp_session(page)
    screen.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": dpr, "mobile": False})
    try:
        load_workflow(page, workflows[name])
        view = fit_view(page)
        page.screenshot(path=str(artifacts / f"fit-view-{name}-{renderer}-{viewport}.png"))
    finally:
        screen.send("Emulation.clearDeviceMetricsOverride")
        screen.detach()
    assert view["viewport"] == [width, height] and view["dpr"] == dpr, view
    assert view["scale"] >= view["threshold"] and not view["low_quality"], view


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_wire_goes_right_or_down(page, workflows, renderer, name):
    """As opened: each link runs from a node to one in a column further right, or below it in the same column."""
    load_workflow(page, workflows[name])
    backwards = page.evaluate(
        """() => {
            const { graph } = window.app;
            const found = [];
            for (const link of graph.links instanceof Map ? graph.links.values() : Object.values(graph.links)) {
                const a = graph.getNodeById(link.origin_id), b = graph.getNodeById(link.target_id);
                const right = b.pos[0] >= a.pos[0] + a.size[0];
                const below = b.pos[0] === a.pos[0] && b.pos[1] > a.pos[1] + a.size[1];
                if (!right && !below) found.push(`${a.type} #${a.id} -> ${b.type} #${b.id}`);
            }
            return found;
        }"""
    )
    assert backwards == []
