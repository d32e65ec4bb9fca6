"""Web tier: one real ComfyUI server (the server tier's harness) and one Chromium for the session; pages per module."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from comfy_page import FLAGS, RENDERERS, VIEWPORT, browser_path, page_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ -> `support` package

from support.comfy_env import ARTIFACTS as TEST_ARTIFACTS  # noqa: E402
from support.comfy_env import ROOT  # noqa: E402
from support.server import ComfyServer  # noqa: E402
from support.test_models import checkpoint  # noqa: E402
from support.tiny_models import tiny_adapter  # noqa: E402
from support.workflows import TEMPLATES, ui_path  # noqa: E402

ARTIFACTS = TEST_ARTIFACTS / "web"
WORKFLOWS = ROOT / "example_workflows"
TINY_CHECKPOINT = "tiny_sd15.safetensors"
LOCALES = ROOT / "locales"
PAGE_SCRIPT = "js/drum.js"


@pytest.fixture(scope="session")
def server():
    """ComfyUI with the pack, the tiny SD1.5 checkpoint, a tiny CLIP-L adapter and the example history."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    base = ARTIFACTS / "base"
    for folder in ("checkpoints", "drum"):
        (base / "models" / folder).mkdir(parents=True)
    (base / "models" / "checkpoints" / TINY_CHECKPOINT).symlink_to(checkpoint("sd15"))
    tiny_adapter("L").save(base / "models" / "drum" / "L.safetensors")
    (base / "input").mkdir()
    shutil.copy(WORKFLOWS / "example_history.txt", base / "input")
    with ComfyServer(base) as running:
        yield running


@pytest.fixture(scope="session")
def input_dir(server) -> Path:
    return server.base / "input"


@pytest.fixture(scope="session")
def workflows() -> dict[str, dict]:
    """The example workflows (UI format, example_workflows/<title>.json) by slug (drum_sd15, ...)."""
    return {name: json.loads(ui_path(name).read_text(encoding="utf-8")) for name in TEMPLATES}


@pytest.fixture(scope="session")
def extension_url(server) -> str:
    """Absolute URL of web/js/drum.js as ComfyUI serves it (under the pack's folder name)."""
    scripts = [path for path in server.get("/extensions") if path.endswith(f"/{PAGE_SCRIPT}")]
    assert len(scripts) == 1, f"ComfyUI serves no (or several) {PAGE_SCRIPT}: {scripts}\n{server.log_tail()}"
    return server.url + scripts[0]


@pytest.fixture(scope="session")
def locales() -> Path:
    """The pack's locales/ folder (ComfyUI's layout: <language>/main.json and nodeDefs.json)."""
    return LOCALES


@pytest.fixture(scope="session")
def artifacts(server) -> Path:
    """test-artifacts/web/: screenshots (the server's files are under base/)."""
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Debian's Chromium, headless, with a fresh profile."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise RuntimeError(
            "the web tests need the Python playwright package: pip install -e '.[test]' (never `playwright install`)"
        ) from error
    executable = browser_path()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=executable, headless=True, args=FLAGS, viewport=VIEWPORT
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def page_errors() -> list[str]:
    """Uncaught page errors and console errors that come from the pack's scripts."""
    return []


@pytest.fixture(scope="module")
def dialogs() -> list[str]:
    """Messages of every alert/confirm/prompt the page opened (all dismissed)."""
    return []


@pytest.fixture(scope="module", params=list(RENDERERS))
def renderer(request) -> str:
    """The node renderer the page uses: the classic canvas one, or the Vue "Nodes 2.0" one."""
    return request.param


@pytest.fixture(scope="module")
def page(browser, server, extension_url, page_errors, dialogs, artifacts, renderer):
    """The ComfyUI page in English with `renderer`."""
    yield from page_for(browser, server, extension_url, page_errors, dialogs, artifacts, renderer, "en")
