"""POST / GET /drum/ratings on a real ComfyUI server: a rating is stored with the image's prompt in the pack's
ratings file; only images inside the output / temp folders are accepted; bad bodies are plain 4xx JSON errors
that change nothing."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from drum_core.ratings import load_ratings

pytestmark = pytest.mark.server

RUN = secrets.token_hex(4)  # the session's server is shared: this module's own file names
PROMPT = "a red fox in fresh snow, watercolor"


def comfy_png(path: Path, positive: str, negative: str = "blurry") -> Path:
    """A PNG as ComfyUI's SaveImage writes it: the API graph in a `prompt` text chunk (and a `workflow` one)."""
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "seed": 1,
                "steps": 1,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
    }
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    info.add_text("workflow", json.dumps({"nodes": []}))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 80, 40)).save(path, pnginfo=info)
    return path


def call(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def rate(server, image: dict, rating, path: str = "/drum/ratings") -> tuple[int, dict]:
    return call(server, "POST", path, json.dumps({"image": image, "rating": rating}).encode())


@pytest.fixture(scope="module")
def ratings_file(server) -> Path:
    return server.base / "user" / "__drum" / "ratings.json"


@pytest.fixture(scope="module")
def images(server) -> dict[str, dict]:
    """Output and temp images (ComfyUI format) of this module, by name: their /view references."""
    output, temp = server.base / "output", server.base / "temp"
    comfy_png(output / f"ratings_{RUN}_00001_.png", PROMPT)
    comfy_png(output / f"ratings_{RUN}" / "portraits" / "ComfyUI_00001_.png", "an old sailor, oil painting")
    comfy_png(temp / f"ratings_{RUN}_temp_00001_.png", "a lighthouse at dusk")
    return {
        "top": {"filename": f"ratings_{RUN}_00001_.png", "subfolder": "", "type": "output"},
        "sub": {"filename": "ComfyUI_00001_.png", "subfolder": f"ratings_{RUN}/portraits", "type": "output"},
        "temp": {"filename": f"ratings_{RUN}_temp_00001_.png", "subfolder": "", "type": "temp"},
    }


def test_like_dislike_clear_are_stored_with_the_images_prompt(server, images, ratings_file):
    status, answer = rate(server, images["top"], "like")
    assert status == 200, answer
    assert answer == {"image": images["top"], "key": images["top"]["filename"], "rating": "like", "prompts": [PROMPT]}
    stored = json.loads(ratings_file.read_text(encoding="utf-8"))["ratings"]
    assert [(r["kind"], r["image"], r["rating"], r["prompts"]) for r in stored if RUN in r["image"]] == [
        ("output", images["top"]["filename"], 5.0, [PROMPT])
    ]
    # The /api prefix the page's api.fetchApi uses reaches the same route.
    status, answer = rate(server, images["sub"], "dislike", path="/api/drum/ratings")
    assert (status, answer["key"], answer["rating"], answer["prompts"]) == (
        200,
        f"ratings_{RUN}/portraits/ComfyUI_00001_.png",
        "dislike",
        ["an old sailor, oil painting"],
    )
    assert rate(server, images["temp"], "like")[1]["rating"] == "like"
    mine = {key: value for key, value in load_ratings(ratings_file).items() if RUN in key}
    assert mine == {images["top"]["filename"]: 5.0, f"ratings_{RUN}/portraits/ComfyUI_00001_.png": 1.0}
    assert load_ratings(ratings_file, "temp")[images["temp"]["filename"]] == 5.0
    # GET: every rating, or one image's.
    status, listing = call(server, "GET", "/drum/ratings")
    assert status == 200
    assert [entry for entry in listing["ratings"] if RUN in entry["filename"] + entry["subfolder"]] == [
        {**images["top"], "rating": "like"},
        {**images["sub"], "rating": "dislike"},
        {**images["temp"], "rating": "like"},
    ]
    query = "&".join(f"{name}={value}" for name, value in images["sub"].items())
    assert call(server, "GET", f"/drum/ratings?{query}")[1]["rating"] == "dislike"
    # Re-rating replaces, clearing removes.
    assert rate(server, images["top"], "dislike")[1]["rating"] == "dislike"
    assert rate(server, images["top"], "clear")[1] == {
        "image": images["top"],
        "key": images["top"]["filename"],
        "rating": None,
        "prompts": [],
    }
    assert images["top"]["filename"] not in load_ratings(ratings_file)
    assert call(server, "GET", f"/drum/ratings?filename={images['top']['filename']}&type=output")[1]["rating"] is None
    # ComfyUI's own user-data routes do not serve the pack's System User folder.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + "/userdata/..%2F__drum%2Fratings.json", timeout=60)
    assert refused.value.code in (400, 403, 404)


@pytest.fixture(scope="module")
def outside(server, tmp_path_factory) -> Path:
    """An image outside every ComfyUI folder, and links to it (and to its folder) inside output/."""
    folder = tmp_path_factory.mktemp("outside")
    comfy_png(folder / "secret.png", "outside prompt")
    (server.base / "output" / f"ratings_{RUN}_link.png").symlink_to(folder / "secret.png")
    (server.base / "output" / f"ratings_{RUN}_linked_folder").symlink_to(folder, target_is_directory=True)
    return folder


@pytest.mark.parametrize(
    ("image", "status", "message"),
    [
        ({"filename": "../server.log", "subfolder": "", "type": "output"}, 400, "file name without folders"),
        ({"filename": "secret.png", "subfolder": "../..", "type": "output"}, 400, "subfolder must be a folder inside"),
        ({"filename": "server.log", "subfolder": "..", "type": "temp"}, 400, "subfolder must be a folder inside"),
        ({"filename": "passwd", "subfolder": "/etc", "type": "output"}, 400, "subfolder must be a folder inside"),
        ({"filename": "/etc/passwd", "subfolder": "", "type": "output"}, 400, "file name without folders"),
        ({"filename": "x.png", "subfolder": "a/../../..", "type": "output"}, 400, "subfolder must be a folder inside"),
        ({"filename": "example.png", "subfolder": "", "type": "input"}, 400, "only output and temp images can be rated, not type 'input'"),
        ({"filename": "x.png", "subfolder": "", "type": "../output"}, 400, "only output and temp images"),
        ({"filename": f"ratings_{RUN}_link.png", "subfolder": "", "type": "output"}, 400, "not inside ComfyUI's output folder"),
        (
            {"filename": "secret.png", "subfolder": f"ratings_{RUN}_linked_folder", "type": "output"},
            400,
            "not inside ComfyUI's output folder",
        ),
        ({"filename": "missing.png", "subfolder": "", "type": "output"}, 404, "no image missing.png in ComfyUI's output folder"),
        ({"filename": 3, "subfolder": "", "type": "output"}, 400, "image filename must be a string"),
        ({"filename": "a.png", "subfolder": ["x"], "type": "output"}, 400, "image subfolder must be a string"),
        ("ComfyUI_00001_.png", 400, '"image" must be an object'),
    ],
)
def test_only_images_inside_output_or_temp_are_accepted(server, outside, ratings_file, image, status, message):
    before = ratings_file.read_bytes() if ratings_file.exists() else None
    got, answer = rate(server, image, "like")
    assert (got, set(answer)) == (status, {"error"}), answer
    assert message in answer["error"]
    assert str(outside) not in answer["error"] and str(server.base) not in answer["error"]  # no server path in the answer
    assert (ratings_file.read_bytes() if ratings_file.exists() else None) == before


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "request body is not JSON"),
        (b"\xff\xfe", 400, "request body is not JSON"),
        (b'["like"]', 400, 'request body must be {"image"'),
        (b'{"image": {}, "rating": "like", "path": "/etc/passwd"}', 400, 'request body must be {"image"'),
        (b'{"image": {"filename": "a.png"}, "rating": "love"}', 400, "rating must be one of like, dislike, clear, not 'love'"),
        (b'{"image": {"filename": "a.png"}, "rating": 5}', 400, "rating must be one of like, dislike, clear"),
        (json.dumps({"image": {"filename": "a.png"}, "rating": "like", "x": "y" * 20_000}).encode(), 413, "larger than 16384 bytes"),
    ],
)
def test_bad_bodies_are_plain_errors(server, ratings_file, body, status, message):
    before = ratings_file.read_bytes() if ratings_file.exists() else None
    got, answer = call(server, "POST", "/drum/ratings", body)
    assert (got, set(answer)) == (status, {"error"}), answer
    assert message in answer["error"]
    assert (ratings_file.read_bytes() if ratings_file.exists() else None) == before
    assert server.alive()


def test_an_oversized_body_without_a_length_is_refused_too(server):
    """A chunked body has no Content-Length: the route reads at most its bound."""

    def chunks():
        yield b'{"image": {"filename": "a.png"}, "rating": "like", "x": "'
        for _ in range(40):
            yield b"y" * 1024
        yield b'"}'

    request = urllib.request.Request(
        server.url + "/drum/ratings", data=chunks(), method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    assert error.value.code == 413
    assert "larger than 16384 bytes" in json.loads(error.value.read().decode())["error"]
