"""Like / dislike from the ComfyUI page, end to end in real Chromium, both renderers: a graph saves three images,
a click likes one and dislikes another on their Save Image nodes, the ratings file has them (with their prompts),
a reload shows the same state, and DrUM History Split, fed by the outputs history, gives exactly the liked
prompts as likes and the disliked ones as dislikes (the unrated image in neither)."""

from __future__ import annotations

import json
import secrets

import pytest
from comfy_page import next_frames, reload, run_graph, save_screenshot, vue_nodes

from drum_core.ratings import load_ratings

pytestmark = pytest.mark.web

RUN = secrets.token_hex(4)
RATED = {"unrated": None, "disliked": "dislike", "liked": "like"}  # the liked graph is the one left open
CHOSEN: dict[str, set[str]] = {"like": set(), "dislike": set()}  # prompts this module rated, both renderers


def saving_graph(prompt: str, prefix: str) -> dict:
    """An API graph that saves one image of `prompt`: the tiny SD1.5 checkpoint, 64 px, 2 steps."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["4", 0],
                "negative": ["2", 0],
                "latent_image": ["3", 0],
                "seed": 1,
                "steps": 2,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },  # fmt: skip
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


SAVER = 7


def open_api_graph(page, graph: dict, name: str) -> None:
    page.evaluate("async ([graph, name]) => { await window.app.loadApiJson(graph, name); }", [graph, name])
    next_frames(page)


def show_node(page, node_id: int) -> None:
    """Scrolls the canvas so that node `node_id` is near the top left, at 100 %."""
    page.evaluate(
        """(id) => {
            const { app } = window;
            const node = app.graph.getNodeById(id);
            app.canvas.ds.scale = 1;
            app.canvas.ds.offset = [-node.pos[0] + 320, -node.pos[1] + 120];
            app.graph.setDirtyCanvas(true, true);
        }""",
        node_id,
    )
    next_frames(page)


ROW_BUTTONS = ":scope > .drum-rate-pair .drum-rate-button"  # the row's own pairs (the bar shown over the image is in it too)


def row(page, node_id: int):
    """The like / dislike row of an image node (its DOM widget's element)."""
    return page.locator(f"#{row_id(page, node_id)}")


def row_id(page, node_id: int) -> str:
    return page.evaluate(
        """(id) => {
            const element = window.app.graph.getNodeById(id).widgets.find((w) => w.name === "drum_ratings").element;
            element.id ||= `drum-rate-test-${id}`;
            return element.id;
        }""",
        node_id,
    )


def pressed(page, node_id: int, expected: list[str] | None = None) -> list[str]:
    """The ratings shown pressed on a node's row (once it shows `expected`, when given: the state may still be loading)."""
    element = row_id(page, node_id)
    page.wait_for_function(f"(id) => document.getElementById(id)?.querySelectorAll('{ROW_BUTTONS}').length > 0", arg=element)
    script = (
        f"(id) => Array.from(document.getElementById(id).querySelectorAll('{ROW_BUTTONS}[aria-pressed=true]'), (b) => b.dataset.rating)"
    )
    if expected is not None:
        try:
            page.wait_for_function(
                f"([id, expected]) => JSON.stringify(({script})(id)) === JSON.stringify(expected)", arg=[element, expected], timeout=10_000
            )
        except Exception:  # noqa: BLE001 - the assertion below names what is shown
            pass
    return page.evaluate(script, element)


def point_at_image(page) -> None:
    """Moves the mouse onto the middle of the Save Image node's image (the Vue renderer's <img>), as a user does."""
    box = page.locator(f'[data-node-id="{SAVER}"] img[src*="/view"]').first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2 - 20, box["y"] + box["height"] / 2 - 20)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def click_rating(page, node_id: int, word: str) -> dict:
    """Clicks the node's like / dislike button as a user does; the route's answer."""
    show_node(page, node_id)
    with page.expect_response(lambda r: r.url.endswith("/drum/ratings") and r.request.method == "POST") as answer:
        row(page, node_id).locator(f"{ROW_BUTTONS}.drum-rate-{word}").click()
    assert answer.value.ok, answer.value.text()
    return answer.value.json()


def test_click_stores_the_rating_with_the_prompt_and_shows_it_after_a_reload(page, server, renderer, artifacts, page_errors):
    """One image per graph (ComfyUI writes the whole graph into each image: one graph's images share its prompts)."""
    prompts = {name: f"{name} lighthouse {renderer} {RUN}" for name in RATED}
    for name, word in RATED.items():
        open_api_graph(page, saving_graph(prompts[name], f"rate_{RUN}_{renderer}_{name}"), f"rate_{name}_{renderer}.json")
        assert row(page, SAVER).locator(".drum-rate-empty").count() == 1  # nothing to rate before a run
        end = run_graph(page)
        assert end["type"] == "execution_success", end
        if word:
            answer = click_rating(page, SAVER, word)
            assert (answer["rating"], answer["prompts"]) == (word, [prompts[name]])
            CHOSEN[word].add(prompts[name])
        assert pressed(page, SAVER, [word] if word else []) == ([word] if word else [])
    save_screenshot(page, artifacts / f"ratings-{renderer}.png", nodes=[SAVER])
    if vue_nodes(page):  # the node's image is an <img> there: the bar shown over it has the same state
        show_node(page, SAVER)
        point_at_image(page)
        bar = page.locator(".drum-rate-hover")
        bar.wait_for(state="visible")
        # a popover kept in the node's row, drawn in the top layer at the image's bottom left corner, inside the image
        image = page.locator(f'[data-node-id="{SAVER}"] img[src*="/view"]').first.bounding_box()
        shown = bar.bounding_box()
        assert bar.evaluate("(b) => b.matches(':popover-open') && b.closest('.drum-rate-row') !== null")
        assert image["x"] <= shown["x"] and shown["x"] + shown["width"] <= image["x"] + image["width"], (image, shown)
        assert image["y"] <= shown["y"] and shown["y"] + shown["height"] <= image["y"] + image["height"], (image, shown)
        assert bar.locator(".drum-rate-button[aria-pressed=true]").evaluate_all("(b) => b.map((x) => x.dataset.rating)") == ["like"]
        for word in ("dislike", "like"):  # a click on the bar rates the image too; the node's row follows
            point_at_image(page)
            with page.expect_response(lambda r: r.url.endswith("/drum/ratings") and r.request.method == "POST") as answer:
                bar.locator(f".drum-rate-{word}").click()
            assert answer.value.json()["rating"] == word
            assert pressed(page, SAVER, [word]) == [word]
    # The ratings file in ComfyUI's user folder holds both, with their prompts, keyed like the outputs scanner.
    ratings_file = server.base / "user" / "__drum" / "ratings.json"
    stored = json.loads(ratings_file.read_text(encoding="utf-8"))["ratings"]
    mine = {r["image"]: (r["rating"], r["prompts"]) for r in stored if f"rate_{RUN}_{renderer}_" in r["image"]}
    assert mine == {
        f"rate_{RUN}_{renderer}_liked_00001_.png": (5.0, [prompts["liked"]]),
        f"rate_{RUN}_{renderer}_disliked_00001_.png": (1.0, [prompts["disliked"]]),
    }
    # A reload: the open workflow's Save Image gets its image back (from /history), its state from GET /drum/ratings.
    reload(page)
    shown = page.evaluate("(id) => window.app.graph.getNodeById(id).drumRatedImages.map((image) => image.filename)", SAVER)
    assert shown == [f"rate_{RUN}_{renderer}_liked_00001_.png"]  # a reload reopens the open workflow: the last one
    got = pressed(page, SAVER, ["like"])
    assert got == ["like"]
    # Clicking the pressed button again clears the rating (file and page); a third click likes it again.
    liked = f"rate_{RUN}_{renderer}_liked_00001_.png"
    assert click_rating(page, SAVER, "like")["rating"] is None
    assert pressed(page, SAVER, []) == [] and liked not in load_ratings(ratings_file)
    assert click_rating(page, SAVER, "like")["rating"] == "like"
    assert pressed(page, SAVER, ["like"]) == ["like"] and load_ratings(ratings_file)[liked] == 5.0
    assert page_errors == []


def split_graph() -> dict:
    """DrUM History from Outputs (the whole output folder, its images only) -> DrUM History Split -> Preview Any."""
    return {
        "1": {
            "class_type": "DrUMOutputsHistory",
            "inputs": {"folder": "(all outputs)", "since_days": 0.0, "dedupe": False, "include_queue": False},
        },
        "2": {"class_type": "DrUMHistorySplit", "inputs": {"history": ["1", 0], "threshold": 3.0}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},  # an output node, so that the split runs
    }


def test_history_split_gives_the_clicked_likes_and_dislikes(page, server, renderer):
    assert CHOSEN["like"] and CHOSEN["dislike"], "the click test runs first"
    entry = server.run(split_graph())  # the server's own queue: a rejected graph names its node errors at once
    assert entry.status == "success", entry.messages
    outputs = entry.outputs
    split = outputs["2"]["drum_split"][0]
    likes = {row["prompt"]: row["weight"] for row in split["likes"]["preview"]}
    dislikes = {row["prompt"]: row["weight"] for row in split["dislikes"]["preview"]}
    assert (split["likes"]["count"], split["dislikes"]["count"]) == (len(CHOSEN["like"]), len(CHOSEN["dislike"]))
    assert likes == dict.fromkeys(CHOSEN["like"], 5.0)
    assert dislikes == dict.fromkeys(CHOSEN["dislike"], 2.0)  # threshold 3 - rating 1
