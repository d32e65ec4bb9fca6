"""The `drum` command line on tiny random models: images, profiles, missing weights, Ctrl-C."""

import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from drum_core import tiny
from drum_core.cli import TINY_BANNER, main
from drum_core.weights import HUB_PAGE

RATED = [f"{prompt}\t{rating}" for prompt, rating in zip(tiny.HISTORY, [5, 4, 1, 3, 2, 5, 4, 1, 3, 2, 5, 4])]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny SD1 diffusers folder and a folder with its L adapter."""
    root = tmp_path_factory.mktemp("sd1")
    tiny.pipeline("sd1").save_pretrained(root / "model")
    tiny.adapters("sd1")["L"].save(root / "L.safetensors")
    return root


@pytest.fixture
def history_file(tmp_path):
    path = tmp_path / "history.txt"
    path.write_text("\n".join(RATED) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("family", ["sd1", "sd3"])
def test_tiny_random_runs_the_full_pipeline_to_a_png(tmp_path, capsys, family):
    out = tmp_path / "out" / "tiny.png"
    assert main(["personalize", "--tiny-random", "--family", family, "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert TINY_BANNER in captured.err and f"wrote {out} ({TINY_BANNER})" in captured.out
    assert f"{family}: 1 of 12 history prompts as references" in captured.err
    assert Image.open(out).size == (tiny.IMAGE_SIZE, tiny.IMAGE_SIZE)


def test_a_model_folder_with_adapters_end_to_end(model_folder, history_file, tmp_path, capsys, offline):
    out = tmp_path / "image.png"
    argv = ["personalize", "--model", str(model_folder / "model"), "--adapters", str(model_folder), "--history", str(history_file)]
    argv += ["--prompt", "a fox in the snow", "--alpha", "0.5", "--ratio", "0.25", "--steps", "2", "--size", "32", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "sd1: 3 of 12 history prompts as references, alpha 0.5" in captured.err
    assert TINY_BANNER not in captured.err + captured.out
    assert Image.open(out).size == (32, 32)


def test_several_degrees_render_side_by_side_from_the_same_noise(tmp_path, capsys):
    out = tmp_path / "sweep.png"
    assert main(["personalize", "--tiny-random", "--alpha", "0,0,1", "--no-progress", "--out", str(out)]) == 0
    assert "alpha 0, 0, 1" in capsys.readouterr().err
    row = np.asarray(Image.open(out))
    size = tiny.IMAGE_SIZE
    assert row.shape == (size, 3 * size, 3)
    first, second, third = (row[:, i * size : (i + 1) * size] for i in range(3))
    assert np.array_equal(first, second)  # the same degree and noise give the same image
    assert not np.array_equal(first, third)  # the degree changes it
    with pytest.raises(SystemExit) as usage_error:  # argparse's own exit status for bad arguments
        main(["personalize", "--tiny-random", "--alpha", "0.2,x"])
    assert usage_error.value.code == 2 and "degrees must be numbers separated by commas" in capsys.readouterr().err


def test_missing_adapters_fail_before_the_model_is_loaded(model_folder, history_file, tmp_path, capsys, offline):
    broken = tmp_path / "model"
    shutil.copytree(model_folder / "model", broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()  # loading the model would fail with another error
    empty = tmp_path / "weights"
    empty.mkdir()
    out = tmp_path / "image.png"
    argv = [
        "personalize",
        "--model",
        str(broken),
        "--adapters",
        str(empty),
        "--history",
        str(history_file),
        "--prompt",
        "x",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("drum personalize: DrUM adapter weights not found: L.safetensors.")
    assert HUB_PAGE in err and str(empty) in err and "Traceback" not in err
    assert not out.exists()


def test_profile_lists_the_picked_prompts_with_intensities(model_folder, history_file, capsys):
    argv = ["profile", "--model", str(model_folder / "model"), "--history", str(history_file), "--ratio", "0.25", "--no-progress"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{history_file}: 12 prompts; the coreset keeps 3:"
    rows = [line.split(None, 3) for line in lines[2:]]
    assert [int(rank) for rank, *_ in rows] == [1, 2, 3]
    for _, index, intensity, prompt in rows:
        assert RATED[int(index)] == f"{prompt}\t{int(float(intensity))}"

    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 12 and len(report["picked"]) == 3
    assert [(p["index"], p["prompt"]) for p in report["picked"]] == [(int(r[1]), r[3]) for r in rows]


def test_bad_inputs_are_reported_without_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert main(["personalize", "--tiny-random", "--history", str(missing), "--out", str(tmp_path / "x.png")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["personalize", "--prompt", "x", "--history", str(missing)]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["personalize", "--tiny-random", "--alpha", "1.5"]) == 2
    assert "--alpha must lie in [0, 1], got 1.5" in capsys.readouterr().err


def test_train_is_dispatched(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--help"])
    assert exited.value.code == 0 and "drum train" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly_with_130(tmp_path):
    command = [sys.executable, "-m", "drum_core.cli", "personalize", "--tiny-random", "--out", str(tmp_path / "x.png")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr.readline().strip() == TINY_BANNER  # running: interrupt it while it builds the models
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait() == 130
    assert "drum: interrupted" in rest and "Traceback" not in rest
    assert not (tmp_path / "x.png").exists()
