"""`drum eval` under torchrun: 2 CPU processes (gloo) give the single process's table; a crashed rank resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drum_core.evaluate.cli import main

ROOT = Path(__file__).resolve().parents[1]
USERS = {
    "ada": [
        "a watercolor fox in the snow",
        "watercolor owl at dawn",
        "a watercolor pine forest",
        "misty watercolor lake",
        "watercolor deer",
    ],
    "bo": ["an oil painting of a stormy sea", "oil painting of a boat", "oil painting of cliffs", "a lighthouse in oil paint", "dark sea"],
    "cy": ["photo of a tabby cat", "a cat in a wizard hat", "portrait of a black cat", "a kitten on a sofa", "two cats playing"],
    "di": ["neon city street at night", "cyberpunk alley in rain", "a neon noodle bar", "night market, neon signs", "rainy neon road"],
    "ed": ["a red sports car", "a vintage truck", "a racing motorbike", "an old tractor in a field", "a jeep in the desert"],
}
FLAGS = ["--tiny-random", "--no-images", "--no-progress", "--ratio", "0.5"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def pip_folder(tmp_path):
    folder = tmp_path / "pip"
    folder.mkdir()
    for user, prompts in USERS.items():
        (folder / f"{user}.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in prompts) + "\n", encoding="utf-8")
    return folder


def torchrun(pip_folder: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "drum_core.evaluate", "--pip", str(pip_folder), "--out", str(out), *FLAGS]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=None)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(path: Path) -> dict[str, dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["user"]: json.loads(line) for line in lines[1:]}


def test_two_gloo_processes_give_the_single_process_table_and_resume_after_a_crash(tmp_path, pip_folder, capsys):
    single = tmp_path / "single"
    assert main(["--pip", str(pip_folder), "--out", str(single), *FLAGS]) == 0
    table = capsys.readouterr().out
    alone = records(single / "results.jsonl")

    out = tmp_path / "two"
    done = torchrun(pip_folder, out)
    assert done.stdout.count("| method |") == 1 and table.strip() in done.stdout  # rank 0 prints the gathered table once
    ranks = [records(out / f"results.rank{r}.jsonl") for r in (0, 1)]
    assert sorted(ranks[0]) == ["ada", "cy", "ed"] and sorted(ranks[1]) == ["bo", "di"]  # user j -> rank j mod 2
    assert {**ranks[0], **ranks[1]} == alone  # every score identical, bit for bit
    assert (out / "summary.json").read_text() == (single / "summary.json").read_text()
    assert (out / "table.md").read_text() == (single / "table.md").read_text()

    # rank 1 crashed after "bo" (its "di" never written); rank 0 was killed mid-write of "ed"
    rank1 = (out / "results.rank1.jsonl").read_text().splitlines()
    (out / "results.rank1.jsonl").write_text("\n".join(rank1[:-1]) + "\n", encoding="utf-8")
    rank0 = (out / "results.rank0.jsonl").read_text().splitlines()
    (out / "results.rank0.jsonl").write_text("\n".join(rank0[:-1]) + "\n" + rank0[-1][:25], encoding="utf-8")
    torchrun(pip_folder, out)
    again = [records(out / f"results.rank{r}.jsonl") for r in (0, 1)]
    assert sorted(again[0]) == ["ada", "cy", "di"] and sorted(again[1]) == ["bo", "ed"]  # the two left, dealt out again
    assert {**again[0], **again[1]} == alone
    assert (out / "summary.json").read_text() == (single / "summary.json").read_text()

    # a single process after the distributed run finds every user done
    assert main(["--pip", str(pip_folder), "--out", str(out), *FLAGS]) == 0
    assert records(out / "results.jsonl") == {} and capsys.readouterr().out == table
