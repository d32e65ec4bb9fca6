"""The `drum` command line on tiny random models: images, profiles, missing weights, Ctrl-C."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from drum_core import tiny
from drum_core.cli import TINY_BANNER, TINY_PROFILE_BANNER, main
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
    argv += ["--prompt", "a fox in the snow", "--degree", "0.5", "--ratio", "0.25", "--steps", "2", "--size", "32", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "sd1: 3 of 12 history prompts as references, degree 0.5" in captured.err
    assert TINY_BANNER not in captured.err + captured.out
    assert Image.open(out).size == (32, 32)


def test_several_degrees_render_side_by_side_from_the_same_noise(tmp_path, capsys):
    out = tmp_path / "sweep.png"
    assert main(["personalize", "--tiny-random", "--alpha", "0,0,1", "--no-progress", "--out", str(out)]) == 0
    assert "degree 0, 0, 1" in capsys.readouterr().err
    row = np.asarray(Image.open(out))
    size = tiny.IMAGE_SIZE
    assert row.shape == (size, 3 * size, 3)
    first, second, third = (row[:, i * size : (i + 1) * size] for i in range(3))
    assert np.array_equal(first, second)  # the same degree and noise give the same image
    assert not np.array_equal(first, third)  # the degree changes it


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


def error_lines(capsys) -> list[str]:
    """What a failed command wrote to stderr, less the --tiny-random banners printed before the failure."""
    return [line for line in capsys.readouterr().err.splitlines() if line not in (TINY_BANNER, TINY_PROFILE_BANNER)]


def fails_with_one_line(capsys, argv: list[str]) -> str:
    """Run `drum argv`: exit status 2 (returned, or argparse's SystemExit) and ONE line on stderr, returned."""
    try:
        status = main(argv)
    except SystemExit as exited:
        status = exited.code
    lines = error_lines(capsys)
    assert status == 2 and len(lines) == 1, (status, lines)
    assert lines[0].startswith(("drum personalize: ", "drum profile: ", "drum: ")), lines
    return lines[0]


@pytest.fixture
def bad_history(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a fox\t5\na cat\tlots\n", encoding="utf-8")
    return path


TINY_RUN = ["personalize", "--tiny-random", "--no-progress"]
BAD_PERSONALIZE = {  # case: (arguments after TINY_RUN or after `personalize`, what the line must say)
    "alpha above 1": (TINY_RUN + ["--alpha", "1.5"], "degrees must lie in [0, 1], got 1.5"),
    "alpha not a number": (TINY_RUN + ["--alpha", "0.2,x"], "degrees must be numbers separated by commas"),
    "alpha NaN": (TINY_RUN + ["--alpha", "nan"], "degrees must lie in [0, 1], got nan"),
    "zero steps": (TINY_RUN + ["--steps", "0"], "argument --steps: must lie in [1, inf], got 0"),
    "steps the scheduler cannot take": (TINY_RUN + ["--steps", "1000"], "--steps 1000: this model's scheduler"),
    "ratio 0": (TINY_RUN + ["--ratio", "0"], "argument --ratio: must lie in (0, 1], got 0"),
    "k not an integer": (TINY_RUN + ["--k", "2.5"], "argument --k: expected an integer, got '2.5'"),
    "size too small": (TINY_RUN + ["--size", "4"], "argument --size: must lie in [8, 8192], got 4"),
    "negative seed": (TINY_RUN + ["--seed", "-1"], "argument --seed: must lie in"),
    "infinite guidance": (TINY_RUN + ["--guidance", "inf"], "argument --guidance: must lie in [0, inf], got inf"),
    "unknown device": (TINY_RUN + ["--device", "gpu0"], "--device gpu0: not a device"),
    "absent CUDA device": (TINY_RUN + ["--device", "cuda:7"], "--device cuda:7: no such CUDA device"),
    "output not an image file": (TINY_RUN + ["--out", "image.txt"], "--out image.txt: the image is written as .png"),
    "adapters with tiny-random": (TINY_RUN + ["--adapters", "weights"], "--adapters does nothing with --tiny-random"),
    "model with tiny-random": (TINY_RUN + ["--model", "x/y"], "--model does nothing with --tiny-random"),
    "dtype with tiny-random": (TINY_RUN + ["--dtype", "float16"], "--dtype does nothing with --tiny-random"),
    "family without tiny-random": (
        ["personalize", "--model", "x/y", "--family", "sdxl", "--prompt", "x"],
        "--family does nothing without --tiny-random",
    ),
    "no model": (["personalize", "--prompt", "x"], "--model is required"),
    "no prompt": (["personalize", "--model", "x/y"], "--prompt is required"),
    "abbreviated flag": (TINY_RUN + ["--adapt", "weights"], "unrecognized arguments: --adapt weights"),
}


@pytest.mark.parametrize("case", BAD_PERSONALIZE)
def test_personalize_bad_input_is_one_line_and_exit_2(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing is written on failure, wherever --out points
    argv, expected = BAD_PERSONALIZE[case]
    assert expected in fails_with_one_line(capsys, argv)
    assert not list(tmp_path.iterdir())


def test_history_and_model_folder_problems_name_the_file(tmp_path, bad_history, history_file, capsys):
    missing = tmp_path / "nope.txt"
    assert str(missing) in fails_with_one_line(capsys, TINY_RUN + ["--history", str(missing)])
    assert f"{bad_history} line 2" in fails_with_one_line(capsys, TINY_RUN + ["--history", str(bad_history)])
    for command in ("personalize", "profile"):
        argv = [command, "--history", str(history_file), "--prompt", "x"][: 5 if command == "personalize" else 3]
        line = fails_with_one_line(capsys, [*argv, "--model", str(tmp_path / "no-model")])
        assert (
            line
            == f"drum {command}: --model {tmp_path / 'no-model'}: no such folder (a diffusers pipeline folder, or a Hugging Face hub id)"
        )
        line = fails_with_one_line(capsys, [*argv, "--model", str(tmp_path)])
        assert line == f"drum {command}: --model {tmp_path}: not a diffusers pipeline folder (no model_index.json)"


def test_profile_bad_input_is_one_line_and_exit_2(tmp_path, bad_history, capsys):
    assert f"{bad_history} line 2" in fails_with_one_line(capsys, ["profile", "--tiny-random", "--history", str(bad_history)])
    assert "--model does nothing with --tiny-random" in fails_with_one_line(capsys, ["profile", "--tiny-random", "--model", "x/y"])
    line = fails_with_one_line(capsys, ["profile", "--load", "p.safetensors", "--history", str(bad_history)])
    assert line == "drum profile: --history does nothing with --load (the profile file holds the prompts)"
    assert "--ratio does nothing with --load" in fails_with_one_line(capsys, ["profile", "--load", "p.safetensors", "--ratio", "0.5"])
    assert "--model is required" in fails_with_one_line(capsys, ["profile", "--history", str(bad_history)])
    assert "argument --max-count: must lie in [0, inf], got -1" in fails_with_one_line(capsys, ["profile", "--max-count", "-1"])


def test_the_dispatcher_reports_usage_errors_on_one_line(capsys):
    assert "the following arguments are required" in fails_with_one_line(capsys, [])
    assert "invalid choice: 'personalise'" in fails_with_one_line(capsys, ["personalise"])


def test_profile_tiny_random_says_what_it_verifies(capsys):
    assert main(["profile", "--tiny-random", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == TINY_PROFILE_BANNER and "image" not in captured.err
    assert "built-in tiny history: 12 prompts; the coreset keeps 1:" in captured.out


def test_a_real_process_prints_one_line_and_no_library_warnings(tmp_path):
    """Out of process: the actual stderr of a failure found after the pipeline is built (diffusers imported)."""
    command = [sys.executable, "-m", "drum_core.cli", *TINY_RUN, "--steps", "5000", "--out", str(tmp_path / "x.png")]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == TINY_BANNER and len(lines) == 2, lines  # no torchvision warnings from transformers, no traceback
    assert lines[1].startswith("drum personalize: --steps 5000: this model's scheduler (") and lines[1].endswith("takes 1 to 999 steps")
    assert not (tmp_path / "x.png").exists()


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


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """A hub endpoint where nothing listens (connection refused at once), HF_HUB_OFFLINE unset, an empty hub cache."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return tmp_path / "hub-cache"


def test_a_hub_id_that_cannot_be_reached_is_one_line_saying_how_to_use_a_folder(unreachable_hub, history_file, monkeypatch, capsys):
    for argv in (["personalize", "--prompt", "x"], ["profile"]):
        line = fails_with_one_line(capsys, [*argv, "--model", "someone/no-such-model", "--history", str(history_file)])
        assert line.endswith(
            "--model someone/no-such-model: the Hugging Face hub could not be reached (ConnectError) and the model is not cached; "
            "download it where there is network (hf download someone/no-such-model --local-dir FOLDER) and pass --model FOLDER"
        ), line
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = fails_with_one_line(capsys, ["profile", "--model", "someone/no-such-model", "--history", str(history_file)])
    assert "--model someone/no-such-model: HF_HUB_OFFLINE is set and the model is not in the local hub cache; download it" in line
    line = fails_with_one_line(capsys, ["profile", "--model", "not a hub id!", "--history", str(history_file)])
    assert line == "drum profile: --model not a hub id!: neither a folder nor a Hugging Face hub id (namespace/name)"


def test_a_cached_hub_model_is_used_when_the_hub_cannot_be_reached(unreachable_hub, model_folder, history_file, capsys):
    snapshot = unreachable_hub / "models--someone--tiny-sd1" / "snapshots" / "0123abcd"
    shutil.copytree(model_folder / "model", snapshot)
    (unreachable_hub / "models--someone--tiny-sd1" / "refs").mkdir()
    (unreachable_hub / "models--someone--tiny-sd1" / "refs" / "main").write_text("0123abcd")
    argv = ["profile", "--model", "someone/tiny-sd1", "--history", str(history_file), "--ratio", "0.25", "--no-progress", "--json"]
    assert main(argv) == 0
    assert len(json.loads(capsys.readouterr().out)["picked"]) == 3


def test_a_profile_that_cannot_be_written_names_the_users_file(tmp_path, capsys):
    target = tmp_path / "no-such-folder" / "me.safetensors"
    line = fails_with_one_line(capsys, ["profile", "--tiny-random", "--no-progress", "--save", str(target)])
    assert line == f"drum profile: [Errno 2] No such file or directory: '{target}'"
