"""The pack's translations in ComfyUI's layout: locales/<language>/main.json (the page's texts, under "drum")
and nodeDefs.json (node names, descriptions, inputs, outputs) at the pack root, served by ComfyUI at /i18n.

English must say, word for word, what every registered node's schema says (so a node or input added
without its entry fails here); every other language must translate the same keys with the same
placeholders; and with ComfyUI's language set to French the page shows French names and panel texts.
"""

from __future__ import annotations

import json
import re

import pytest
from comfy_page import load_workflow, nodes_of_type, page_for, panel_rows
from support.comfy_env import ROOT
from support.workflows import THUMBNAIL_SIZE, TITLES

pytestmark = pytest.mark.web

LANGUAGES = ["en", "fr"]
PACK_MODULE = "custom_nodes.ComfyUI-DrUM"
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def read(locales, language: str, name: str) -> dict:
    return json.loads((locales / language / name).read_text(encoding="utf-8"))


def flatten(table: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": "text"}} -> {"a.b": "text"}"""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def schema_entry(info: dict) -> dict:
    """The English nodeDefs entry that says what the node's /object_info says."""
    entry = {"display_name": info["display_name"]}
    if info.get("description"):
        entry["description"] = info["description"]
    inputs = {}
    for section in ("required", "optional"):
        for name, spec in (info["input"].get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            inputs[name] = {"name": name} | ({"tooltip": options["tooltip"]} if options.get("tooltip") else {})
    if inputs:
        entry["inputs"] = inputs
    tooltips = info.get("output_tooltips") or []
    outputs = {
        str(index): {"name": name} | ({"tooltip": tooltips[index]} if index < len(tooltips) and tooltips[index] else {})
        for index, name in enumerate(info.get("output_name") or [])
    }
    if outputs:
        entry["outputs"] = outputs
    return entry


@pytest.fixture(scope="module")
def pack_nodes(server) -> dict[str, dict]:
    """/object_info of the pack's nodes."""
    nodes = {name: info for name, info in server.get("/object_info").items() if info.get("python_module") == PACK_MODULE}
    assert nodes, f"the server registers no node from {PACK_MODULE}"
    return nodes


def test_english_node_entries_say_what_the_schemas_say(pack_nodes, locales):
    english = read(locales, "en", "nodeDefs.json")
    assert sorted(english) == sorted(pack_nodes), "locales/en/nodeDefs.json: nodes missing or no longer registered"
    for node_id, info in pack_nodes.items():
        assert english[node_id] == schema_entry(info), f"locales/en/nodeDefs.json: {node_id} differs from its schema"


@pytest.mark.parametrize("name", ["main.json", "nodeDefs.json"])
def test_every_language_translates_every_key(locales, name):
    english = flatten(read(locales, "en", name))
    assert sorted(path.name for path in locales.iterdir()) == LANGUAGES
    for language in LANGUAGES[1:]:
        translated = flatten(read(locales, language, name))
        assert sorted(translated) == sorted(english), f"locales/{language}/{name}: keys differ from English"
        for key, text in translated.items():
            assert isinstance(text, str) and text.strip(), f"locales/{language}/{name}: {key} is empty"
            assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(english[key])), f"locales/{language}/{name}: {key}"


def test_every_page_text_has_english(locales):
    english = flatten(read(locales, "en", "main.json"))
    source = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "web" / "js").glob("*.js"))
    used = set(re.findall(r'\bt\("([\w.]+)"', source)) | set(re.findall(r'\bempty: "([\w.]+)"', source))
    assert used, "no t(...) call found in web/js"
    assert sorted(key for key in used if f"drum.{key}" not in english) == []


def test_comfyui_serves_the_translations_at_i18n(server, locales):
    served = server.get("/i18n")
    for language in LANGUAGES:
        assert served[language]["nodeDefs"] == read(locales, language, "nodeDefs.json")
        assert served[language]["drum"] == read(locales, language, "main.json")["drum"]


@pytest.fixture(scope="module")
def french_page(browser, server, extension_url, page_errors, dialogs, artifacts, renderer):
    yield from page_for(browser, server, extension_url, page_errors, dialogs, artifacts, renderer, "fr")
    server.post("/settings", {"Comfy.Locale": "en"})


def test_french_page_shows_french_names_and_texts(french_page, workflows, locales, page_errors, renderer):
    french = read(locales, "fr", "nodeDefs.json")
    texts = read(locales, "fr", "main.json")["drum"]
    load_workflow(french_page, workflows["drum_sd15"])
    history = nodes_of_type(french_page, "DrUMHistoryLoader")[0]["id"]
    conditioner = nodes_of_type(french_page, "DrUMConditioner")[0]["id"]
    node = "(id) => { const node = window.app.graph.getNodeById(id); return [node.getTitle(), node.inputs.map((input) => input.localized_name ?? input.label)]; }"
    title, inputs = french_page.evaluate(node, history)
    assert title == french["DrUMHistoryLoader"]["display_name"]
    title, inputs = french_page.evaluate(node, conditioner)
    assert title == french["DrUMConditioner"]["display_name"]
    assert french["DrUMConditioner"]["inputs"]["history"]["name"] in inputs
    if renderer == "vue":  # the title is an element there (the classic renderer paints it on the canvas)
        assert french_page.get_by_text(french["DrUMHistoryLoader"]["display_name"], exact=True).count() == 1
    assert panel_rows(french_page, history, "drum_history_preview")["summary"] == texts["history"]["empty"]
    degree = french_page.locator(".drum-degree").first.inner_text()
    assert texts["degree"]["target"] in degree and texts["degree"]["history"] in degree
    assert page_errors == []


def template_browser(page, label: str) -> tuple[list[str], dict[str, int]]:
    """Opens the frontend's template browser on the entry `label` of its Extensions list; the titles of its cards, and
    the width of each card's picture once shown (the frontend fetches <stem>.jpg from the address it builds and shows
    it as <img alt="<title>">, loaded as its card scrolls into view). Frontend 1.58.1 titles a custom node's templates
    by their file stems (docs/comfyui.md, The template browser)."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator("[role=dialog]").last
    dialog.get_by_text(label, exact=True).first.click()
    heading = dialog.locator("h2", has_text=label).first
    heading.wait_for()
    dialog.locator("h3", has_text=TITLES["drum_sd15"]).first.wait_for()
    # the cards' titles: the <h3>s of the pane that holds the heading (the list on the left has <h3>s of its own)
    shown = heading.evaluate(
        """(heading) => {
            let pane = heading.parentElement;
            while (pane && !pane.querySelector("h3")) pane = pane.parentElement;
            return Array.from(pane?.querySelectorAll("h3") ?? [], (title) => title.innerText.trim());
        }"""
    )
    pictures = {}
    for title in shown:
        dialog.locator("h3").filter(has_text=re.compile(f"^{re.escape(title)}$")).first.scroll_into_view_if_needed()
        picture = dialog.locator(f'img[alt="{title}"]').first  # titles hold no quote (support.workflows TITLE_FORBIDDEN)
        picture.wait_for()
        page.wait_for_function("(image) => image.complete && image.naturalWidth > 0", arg=picture.element_handle(), timeout=10_000)
        pictures[title] = picture.evaluate("(image) => image.naturalWidth")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    return sorted(shown), pictures


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_template_browser_names_the_pack_in_the_page_language(request, locales, renderer, language):
    """The pack's entry in the template browser is titled from its locales (templateWorkflows.category.<folder>),
    not by the folder it is installed in, and lists every template of example_workflows, each card titled by the
    template's title (its UI file is named by it: support.workflows TITLES), not by its slug."""
    if renderer != "classic":
        pytest.skip("the template browser is the same in both renderers")
    page = request.getfixturevalue("page" if language == "en" else "french_page")
    labels = read(locales, language, "main.json")["templateWorkflows"]["category"]
    assert sorted(labels) == ["ComfyUI-DrUM", "comfyui-drum"]  # a clone's folder, and the Registry's (comfy node install)
    assert len(set(labels.values())) == 1
    titles, pictures = template_browser(page, labels["ComfyUI-DrUM"])
    assert titles == sorted(TITLES.values())
    assert pictures == dict.fromkeys(TITLES.values(), THUMBNAIL_SIZE)  # each card shows its <title>.jpg
