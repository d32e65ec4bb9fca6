"""DrUM History from Outputs in-process: the queue-history rules, the merge with the scan, folders and fingerprints.

The end-to-end run (real SaveImage images, the real queue) is tests/server/test_server_outputs.py.
"""

import importlib
import json
import os

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from support.comfy_env import node_module

from drum_core.history import History

pytestmark = pytest.mark.comfy


@pytest.fixture
def outputs(pack):
    return node_module("outputs_history")


@pytest.fixture
def folder_paths(pack):
    """ComfyUI's folder_paths (importable once the pack is loaded into the in-process ComfyUI)."""
    return importlib.import_module("folder_paths")


def queue_entry(text: str, started_ms: int, status: str = "success", saved: str | None = None) -> dict:
    """A PromptQueue history entry as ComfyUI 0.3.75 keeps it (execution.PromptQueue.task_done)."""
    graph = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["9", 1], "text": text}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["9", 1], "text": "a negative"}},
        "3": {"class_type": "KSampler", "inputs": {"positive": ["1", 0], "negative": ["2", 0]}},
    }
    images = [] if saved is None else [{"filename": "x.png", "subfolder": "", "type": saved}]
    return {
        "prompt": (0, f"id-{text}", graph, {}, ["4"]),
        "outputs": {"4": {"images": images}},
        "status": {"status_str": status, "completed": status == "success", "messages": [["execution_start", {"timestamp": started_ms}]]},
    }


def test_queue_prompts_are_the_successful_runs_that_saved_no_image(outputs):
    history = {
        "a": queue_entry("previewed later", 3_000_000),
        "b": queue_entry("saved", 1_000_000, saved="output"),
        "c": queue_entry("failed", 1_500_000, status="error"),
        "d": queue_entry("previewed first", 2_000_000, saved="temp"),  # a preview writes to temp: not saved
        "e": {"prompt": "not a queue item", "outputs": {}, "status": {"status_str": "success"}},
        "f": "junk",
        "g": {**queue_entry("x", 2_500_000), "prompt": (0, "g", {"1": {"no": "class_type"}}, {}, [])},  # GraphError: skipped
    }
    assert outputs.queue_prompts(history, None) == [(2000.0, "previewed first"), (3000.0, "previewed later")]
    assert outputs.queue_prompts(history, since=2000.0) == [(3000.0, "previewed later")]  # at `since` is out, as in scan_images
    assert outputs.queue_prompts(None, None) == []


def test_queue_prompts_join_the_scan_in_time_order_and_dedupe_merges_them(outputs):
    scan = History(["old", "new"], [1.0, 5.0], [10.0, 30.0], source="output", ratings=[None, 5.0])
    queued = [(20.0, "middle"), (40.0, "old")]
    merged = outputs.with_queue(scan, queued, dedupe=False)
    assert merged.prompts == ("old", "middle", "new", "old")
    assert merged.timestamps == (10.0, 20.0, 30.0, 40.0)
    assert merged.intensities == (1.0, 1.0, 5.0, 1.0) and merged.ratings == (None, None, 5.0, None)
    deduped = outputs.with_queue(scan, queued, dedupe=True)
    assert deduped.prompts == ("middle", "new", "old")  # "old" again at 40: one record, the newer time
    assert deduped.intensities == (1.0, 5.0, 2.0) and deduped.timestamps == (20.0, 30.0, 40.0)
    assert outputs.with_queue(scan, [], dedupe=True) is scan
    unrated = outputs.with_queue(History(["a"], None, [1.0]), [(2.0, "b")], dedupe=False)
    assert unrated.ratings is None


def save_png(path, text: str) -> None:
    info = PngInfo()
    graph = {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["9", 1], "text": text}},
        "3": {"class_type": "KSampler", "inputs": {"positive": ["1", 0]}},
    }
    info.add_text("prompt", json.dumps(graph))
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


def test_folders_fingerprint_and_resolve(outputs, folder_paths, tmp_path, monkeypatch):
    root = tmp_path / "output"
    (root / "portraits" / "2024").mkdir(parents=True)
    (root / ".hidden").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(root))
    reader = outputs.OutputsReader()
    assert reader.folders() == [outputs.ROOT_FOLDER, "portraits", "portraits/2024"]  # no hidden, no linked folder
    (root / "landscapes").mkdir()
    assert "landscapes" in reader.folders()  # the root changed: listed again
    for bad in ("../elsewhere", "/etc", "linked", "missing", "portraits//2024"):
        with pytest.raises(outputs.OutputsError, match="DrUM History from Outputs"):
            reader.resolve(bad)
    assert reader.resolve("portraits/2024") == os.path.realpath(root / "portraits" / "2024")

    before = reader.fingerprint("portraits")
    save_png(root / "portraits" / "2024" / "a.png", "a fox")
    after = reader.fingerprint("portraits")
    assert after != before and reader.fingerprint("portraits") == after
    os.utime(root / "portraits" / "2024" / "a.png", ns=(1, 1))  # touched: runs again
    assert reader.fingerprint("portraits") != after
    assert reader.fingerprint("landscapes") == reader.fingerprint("landscapes")


def test_the_node_reads_a_folder_with_ratings_and_keeps_its_scan_cache(outputs, folder_paths, tmp_path, monkeypatch):
    root, user = tmp_path / "output", tmp_path / "user"
    (root / "set").mkdir(parents=True)
    user.mkdir()
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(root))
    monkeypatch.setattr(folder_paths, "get_user_directory", lambda: str(user))
    state = node_module("state").DrumState()  # a state of its own: a fresh folder list and scan cache
    for index, text in enumerate(["first prompt", "second prompt"]):
        save_png(root / "set" / f"{index}.png", text)
        os.utime(root / "set" / f"{index}.png", (1000 + index, 1000 + index))
    (root / "set" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ratings = node_module("ratings_route")
    from drum_core.ratings import LIKE_RATING, Ratings

    Ratings(ratings.ratings_file()).rate("output", "set/1.png", LIKE_RATING)
    node = node_module("outputs_history").DrUMOutputsHistory.bound(state)
    assert "nothing_here" in node.validate_inputs(folder="nothing_here")  # the error names the folder
    result = node.execute(folder="set", since_days=0.0, dedupe=False, include_queue=False)
    history = result.args[0].history
    assert history.prompts == ("first prompt", "second prompt") and history.ratings == (None, LIKE_RATING)
    panel = result.ui["drum_outputs"][0]
    assert panel["read"] == 3 and sum(panel["skipped"].values()) == 1 and panel["queue"] == 0
    assert [row["prompt"] for row in panel["newest"]] == ["second prompt", "first prompt"]
    assert os.path.isfile(state.outputs.cache_path())  # persisted beside the ratings
    for name in ("0.png", "1.png"):  # a re-scan of unchanged images reads none of them: unreadable now, same answer
        path = root / "set" / name
        stat = path.stat()
        path.write_bytes(b"x" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = node.execute(folder="set", since_days=0.0, dedupe=False, include_queue=False).args[0].history
    assert again.prompts == history.prompts
