"""`drum eval` (the drum_core.evaluate package) on tiny random pipelines and synthetic PIP / MovieLens data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support.cli_errors import assert_one_line_error

from drum_core import tiny
from drum_core.evaluate.cli import main
from drum_core.evaluate.results import summarize
from drum_core.evaluate.scores import target_history_scores
from drum_core.evaluate.variants import NoGuidance

THEMES = [
    ["a watercolor fox in the snow", "watercolor owl at dawn", "a watercolor pine forest", "misty watercolor lake", "watercolor deer"],
    ["an oil painting of a stormy sea", "oil painting of a boat", "oil painting of cliffs", "a lighthouse in oil paint", "dark oil sea"],
    ["photo of a tabby cat", "a cat in a wizard hat", "portrait of a black cat", "a kitten on a sofa", "two cats playing"],
]

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def pip_folder(tmp_path):
    folder = tmp_path / "pip"
    folder.mkdir()
    for user, prompts in enumerate(THEMES):
        lines = ["train_samples:", *(json.dumps({"prompt": p}) for p in prompts[:3])]
        lines += ["test_samples:", *(json.dumps({"prompt": p, "query": p}) for p in prompts[3:])]
        (folder / f"user{user}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture()
def movielens_folder(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    titles = ["Toy Story (1995)", "Heat (1995)", "American President, The (1995)", "Jumanji (1995)", "Casino (1995)", "Sabrina (1995)"]
    with open(folder / "movies.csv", "w", newline="") as f:
        csv.writer(f).writerows([["movieId", "title", "genres"], *[[i + 1, t, "Comedy|Drama"] for i, t in enumerate(titles)]])
    with open(folder / "ratings.csv", "w", newline="") as f:
        rows = [[user, movie, 1.0 + (user + movie) % 5, 1_000_000 + 10 * movie + user] for user in (1, 2) for movie in range(1, 7)]
        csv.writer(f).writerows([["userId", "movieId", "rating", "timestamp"], *rows])
    return folder


def test_equation_3_scores():
    e = torch.tensor([1.0, 0.0])
    history = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target, weighted = target_history_scores(e, torch.tensor([2.0, 0.0]), history, [1.0, 1.0, 2.0])
    assert target == pytest.approx(100.0)
    assert weighted == pytest.approx((100 + 0 + 2 * 100 / 2**0.5) / 4)  # sum_i p_i sim_i / sum_i p_i
    assert target_history_scores(e, e, history, [1.0, 1.0, 1.0])[1] == pytest.approx((100 + 100 / 2**0.5) / 3)
    with pytest.raises(ValueError, match="3 prompts needs as many intensities"):
        target_history_scores(e, e, history, [1.0])


def test_no_guidance_is_one_softmax_over_the_concatenation():
    adapter = tiny.adapter("clip", 64, seed=3).double()
    g = torch.Generator().manual_seed(0)
    query = torch.randn(1, 78, 64, generator=g, dtype=torch.float64)
    target, refs = torch.randn(2, 77, 64, generator=g, dtype=torch.float64), torch.randn(3, 77, 64, generator=g, dtype=torch.float64)
    plain = NoGuidance(adapter)
    with torch.no_grad():
        tokens, pooled = plain(query, target, refs, intensities=[5.0, 0.1, 1.0], degree=0.9)  # alpha and p play no part
        x = query.expand(2, -1, -1)
        for block in adapter.tf:  # literal: scores over [target | ref_1 | ref_2 | ref_3], one softmax
            context = torch.cat([target, refs.reshape(1, -1, 64).expand(2, -1, -1)], 1)
            heads = lambda t: t.view(2, t.shape[1], 1, 64).transpose(1, 2)  # noqa: E731 (one 64-wide head)
            q, k, v = heads(block.attn.query(x)), heads(block.attn.key(context)), heads(block.attn.value(context))
            attention = F.softmax(q @ k.transpose(-1, -2) / 8.0, -1) @ v
            x = block.norm1(x + block.attn.proj(attention.transpose(1, 2).reshape(2, 78, 64)))
            x = block.norm2(x + block.ff(x))
        assert torch.allclose(tokens, x[:, :-1]) and torch.allclose(pooled, x[:, -1])
        assert all(torch.equal(a, b) for a, b in zip(plain(query, target), adapter(query, target)))  # no references: the adapter


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pip_table_and_resume(tmp_path, pip_folder, capsys):
    out = tmp_path / "out"
    assert main(["--pip", str(pip_folder), "--tiny-random", "--out", str(out), "--no-progress", "--save-images"]) == 0
    table = capsys.readouterr().out
    assert "| method | CLIP score: target | history | Imp % | Text align: target | history | Imp % |" in table
    for label in ("base model", "DrUM", "DrUM, no sampling", "DrUM, no guidance", "DrUM, other user's history", "DrUM, shuffled history"):
        assert f"| {label} |" in table
    lines = read_jsonl(out / "results.jsonl")
    assert lines[0]["settings"]["degree"] == 0.3 and [r["user"] for r in lines[1:]] == ["user0", "user1", "user2"]
    first = lines[1]
    assert first["targets"] == THEMES[0][4:2:-1]  # the two most recent (test samples), newest first
    references = {"base": 0, "drum": 1, "no_sampling": 3, "no_guidance": 1, "other_user": 1, "shuffled": 1}
    assert first["history"] == 3 and first["references"] == references
    assert [r["other_user"] for r in lines[1:]] == ["user1", "user2", "user0"]  # the fixed derangement
    assert first["scores"]["base"]["text_target"] == pytest.approx(100.0, abs=1e-3)  # plain pooled of the target itself
    assert all(abs(v) <= 100 + 1e-3 for r in lines[1:] for scores in r["scores"].values() for v in scores.values())
    assert len(list((out / "images" / "user0").glob("*.png"))) == 12
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["base", "drum", "no_sampling", "no_guidance", "other_user", "shuffled"]
    assert rows[0]["users"] == "3"
    assert json.loads((out / "summary.json").read_text())[0]["clip_imp"] is None  # the base row has no Imp %
    # interrupted after two users (the third line torn mid-write): only the third is evaluated again
    text = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(text[:3]) + "\n" + text[3][:20], encoding="utf-8")
    assert main(["--pip", str(pip_folder), "--tiny-random", "--out", str(out), "--no-progress"]) == 0
    again = read_jsonl(out / "results.jsonl")
    assert again[:3] == lines[:3] and again[3] == lines[3]  # same scores: deterministic
    capsys.readouterr()
    status = main(["--pip", str(pip_folder), "--tiny-random", "--out", str(out), "--degree", "0.5", "--no-progress"])
    assert_one_line_error(capsys, "eval", status, "results.jsonl was made with other settings")


def test_movielens_text_align_only(tmp_path, movielens_folder, capsys):
    out = tmp_path / "out"
    argv = ["--movielens", str(movielens_folder), "--tiny-random", "--family", "sdxl", "--no-images", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    records = read_jsonl(out / "results.jsonl")
    assert records[0]["settings"]["degree"] == 0.1  # the paper's MovieLens default
    assert [r["user"] for r in records[1:]] == ["1", "2"]
    assert records[1]["targets"][0].startswith("Sabrina (1995)")  # the most recent rating first
    assert set(records[1]["scores"]["drum"]) == {"text_target", "text_history"}
    table = capsys.readouterr().out
    assert "| base model | — | — | — | 100.00 |" in table


def test_control_rows_are_drum_on_another_users_and_on_the_shuffled_history():
    """The other_user row = DrUM conditions from the next user's history (without its targets), scored against the
    user's own history; the shuffled row = DrUM from the user's history with shuffled characters."""
    from drum_core.evaluate.evaluator import EvalSettings, Evaluator, split_targets
    from drum_core.history import History
    from drum_core.taste import shuffled_history

    pipe = tiny.pipeline("sd1")
    settings = EvalSettings(variants=("base", "drum", "other_user", "shuffled"), images=False, ratio=0.5)
    evaluator = Evaluator(pipe, settings, tiny.adapters("sd1"))
    mine, theirs = History(THEMES[0]), History(THEMES[1])
    record = evaluator.evaluate("me", mine, ("them", theirs))
    assert record["other_user"] == "them"
    targets, rest = split_targets(mine)
    for variant, profile_history in (("other_user", split_targets(theirs)[1]), ("shuffled", shuffled_history(rest, 0))):
        session, _ = evaluator._session("drum", profile_history)
        expected = [0.0, 0.0]
        for target in targets:
            pooled = session.personalizer.condition(target, settings.degree).pooled[0]
            scores = target_history_scores(
                pooled, evaluator.pooled_features([target])[0], evaluator.pooled_features(rest.prompts), rest.intensities
            )
            expected = [e + v / len(targets) for e, v in zip(expected, scores)]
        got = record["scores"][variant]
        assert [got["text_target"], got["text_history"]] == pytest.approx(expected, rel=1e-6)
    assert record["scores"]["other_user"] != record["scores"]["drum"] != record["scores"]["shuffled"]
    alone = evaluator.evaluate("me", mine)  # a data set of one user: no other user's row
    assert "other_user" not in alone["scores"] and "shuffled" in alone["scores"]


def test_summary_imp_is_relative_to_the_base_history():
    records = [
        {"user": "a", "scores": {"base": {"text_target": 100, "text_history": 20}, "drum": {"text_target": 90, "text_history": 30}}},
        {"user": "b", "scores": {"base": {"text_target": 100, "text_history": 40}, "drum": {"text_target": 96, "text_history": 50}}},
        {"user": "c", "skipped": "2 records"},
    ]
    base, drum = summarize(records, ["base", "drum"])
    assert base["users"] == 2 and base["text_history"] == 30 and drum["text_target"] == 93
    assert drum["text_imp"] == pytest.approx(100 * (40 - 30) / 30)


# ---------------------------------------------------------------------------------- the command, bad input
def test_missing_or_malformed_data_is_one_line_and_exit_2(tmp_path, pip_folder, movielens_folder, capsys):
    out = ["--tiny-random", "--no-images", "--out", str(tmp_path / "out"), "--no-progress"]
    assert_one_line_error(capsys, "eval", main(["--pip", str(tmp_path / "nowhere"), *out]), f"PIP data not found: {tmp_path / 'nowhere'}")
    (pip_folder / "user1.jsonl").write_text('train_samples:\n{"prompt": "a fox"}\n{"prompt": \n', encoding="utf-8")
    assert_one_line_error(capsys, "eval", main(["--pip", str(pip_folder), *out]), "user1.jsonl line 3: broken JSON")
    (tmp_path / "no_pip").mkdir()
    assert_one_line_error(capsys, "eval", main(["--pip", str(tmp_path / "no_pip"), *out]), "no .jsonl files")
    assert_one_line_error(capsys, "eval", main(["--movielens", str(tmp_path / "no_ml"), *out]), "MovieLens file not found", "movies.csv")
    (movielens_folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,four,5\n", encoding="utf-8")
    assert_one_line_error(capsys, "eval", main(["--movielens", str(movielens_folder), *out]), "ratings.csv line 2")
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.parametrize(
    "flags, refused",
    [
        (["--tiny-random", "--adapters", "weights/"], "--adapters does nothing with --tiny-random"),
        (["--tiny-random", "--model", "m", "--dtype", "float16"], "--model, --dtype do nothing with --tiny-random"),
        (["--model", "m", "--family", "sdxl"], "--family does nothing without --tiny-random"),
        (["--tiny-random", "--no-images", "--steps", "4", "--save-images"], "--save-images, --steps do nothing with --no-images"),
        ([], "--model (or --tiny-random) is required"),
    ],
)
def test_flags_that_do_nothing_are_refused(tmp_path, pip_folder, capsys, flags, refused):
    assert_one_line_error(capsys, "eval", main(["--pip", str(pip_folder), "--out", str(tmp_path / "out"), *flags]), refused)
    assert not (tmp_path / "out").exists()


def test_a_mistyped_flag_is_one_line_and_exit_2(tmp_path, pip_folder, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--pip", str(pip_folder), "--tiny-random", "--out", str(tmp_path), "--degree", "much"])
    assert_one_line_error(capsys, "eval", exited.value.code, "--degree/--alpha: invalid float value: 'much'")


def test_drum_eval_subprocess_bad_input_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "drum_core.cli", "eval", "--movielens", str(tmp_path), "--tiny-random", "--out", str(tmp_path / "o")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"drum eval: MovieLens file not found: {tmp_path / 'movies.csv'}"]
