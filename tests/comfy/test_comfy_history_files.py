"""The History Loader's file list (built at every schema build) in a real ComfyUI input folder: bounded, loop-proof."""

import os
import sys

import pytest

pytestmark = pytest.mark.comfy


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_a_symlink_loop_ends_and_the_walk_is_bounded(pack, tmp_path, monkeypatch):
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
    assert history.history_files() == expected
    assert pack["DrUMHistoryLoader"].GET_SCHEMA().inputs[0].options == ["none", *expected]
