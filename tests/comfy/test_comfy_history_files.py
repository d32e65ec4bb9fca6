"""The History Loader's file list (built at every schema build) in a real ComfyUI input folder: bounded, loop-proof."""

import os
import sys

import pytest

pytestmark = pytest.mark.comfy


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_a_symlink_loop_ends_and_the_walk_is_bounded(pack, state, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "input_directory", str(tmp_path))  # what set_input_directory sets; restored after
    history, input_folder = sys.modules["comfyui_drum.nodes.history"], tmp_path
    deep = input_folder / "users" / "ann" / "2024" / "archive"
    deep.mkdir(parents=True)
    for path in (input_folder / "top.txt", deep.parent / "ann_2024.csv", deep / "too_deep.txt", input_folder / "photo.png"):
        path.write_text("prompt\n", encoding="utf-8")
    (input_folder / "loop").symlink_to(input_folder, target_is_directory=True)  # input/loop/loop/... never ends when followed
    (input_folder / "users" / "back").symlink_to(input_folder / "users", target_is_directory=True)
    (input_folder / "alias.txt").symlink_to(input_folder / "top.txt")  # a linked file is still a file of the folder
    assert history.HISTORY_FOLDER_DEPTH == 3
    expected = ["alias.txt", "top.txt", "users/ann/2024/ann_2024.csv"]  # archive/ is a 4th level: not searched
    assert state.history_files.files() == expected
    assert pack["DrUMHistoryLoader"].GET_SCHEMA().inputs[0].options == ["none", *expected]


def test_the_list_is_kept_between_schema_builds_and_refreshed_on_change(pack, state, tmp_path, monkeypatch):
    """validate_prompt (ComfyUI 0.38.1) builds every queued node's schema: the folder is walked again only when it changed."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "input_directory", str(tmp_path))
    history = sys.modules["comfyui_drum.nodes.history"]
    walks = []
    walk = history.walk_history_files
    monkeypatch.setattr(history, "walk_history_files", lambda root: walks.append(root) or walk(root))
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("prompt\n", encoding="utf-8")
    loader = pack["DrUMHistoryLoader"]
    for _ in range(3):
        assert loader.GET_SCHEMA().inputs[0].options == ["none", "a.txt"]
    assert walks == [str(tmp_path)]  # one walk for three schema builds
    (tmp_path / "sub" / "b.csv").write_text("prompt\n", encoding="utf-8")  # a sub-folder's mtime changes, not the root's
    assert state.history_files.files() == ["a.txt", "sub/b.csv"] and len(walks) == 2
    stamp = os.stat(tmp_path).st_mtime_ns
    (tmp_path / "c.txt").write_text("prompt\n", encoding="utf-8")
    os.utime(tmp_path, ns=(stamp, stamp))  # a file system too coarse to see the change
    assert state.history_files.files() == ["a.txt", "sub/b.csv"] and len(walks) == 2
    state.history_files.invalidate()  # what the upload route's middleware does
    assert state.history_files.files() == ["a.txt", "c.txt", "sub/b.csv"] and len(walks) == 3
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setattr(folder_paths, "input_directory", str(other))  # --input-directory elsewhere
    assert state.history_files.files() == [] and len(walks) == 4
