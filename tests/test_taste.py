"""The taste check (drum_core.taste): held-out split, shuffled control, Text align per degree against a float64
restatement, the recommended degree, and the two acceptance cases on a themed and an unrelated history."""

import json
import math

import numpy
import pytest
import torch
from PIL import Image
from support.cli_errors import assert_one_line_error
from support.taste_models import mixing_adapter

from drum_core import tiny
from drum_core.cli import main as cli_main
from drum_core.diffusers_pipelines import PipelinePersonalizer
from drum_core.history import History
from drum_core.taste import (
    TasteRow,
    TasteSettings,
    held_out_count,
    recommend,
    render_taste,
    shuffled_history,
    shuffled_prompt,
    split_newest,
    taste_check,
    text_align_features,
    unit_sweep,
    use_profile,
)

pytestmark = pytest.mark.usefixtures("one_thread")

WATERCOLOR = [
    "watercolor fox in the snow", "watercolor owl at dawn", "a watercolor pine forest", "misty watercolor lake",
    "watercolor deer in a meadow", "soft watercolor mountains", "watercolor heron by the river", "watercolor cottage garden",
    "a watercolor fox cub", "watercolor birch trees",
]  # fmt: skip
CARS = [
    "photo of a red sports car", "a racing motorbike on a track", "chrome engine close-up", "a vintage truck on a highway",
    "a formula one car at speed", "neon garage at night", "a jeep in the desert", "a tractor in a field",
    "an electric car charging", "a classic convertible",
]  # fmt: skip
OIL = [
    "oil painting of a stormy sea", "oil painting of a boat", "oil painting of cliffs", "a lighthouse in oil paint",
    "dark oil sea at night", "oil painting of waves", "fishing boats in oil", "oil seascape", "harbour at dusk in oil",
    "a shipwreck in oil paint",
]  # fmt: skip
DEGREES = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
SETTINGS = TasteSettings(held_out=4, ratio=0.5)
UNRELATED_TOLERANCE = 0.3  # score points: |edge| of a history unrelated to its held-out prompts, at every allowed degree


@pytest.fixture(scope="module")
def personalizer():
    """Tiny random SD1 encoders with the mixing adapter (tests/support/taste_models.py)."""
    return PipelinePersonalizer(tiny.pipeline("sd1"), {n: mixing_adapter(a) for n, a in tiny.adapters("sd1").items()}).personalizer


@pytest.fixture(scope="module")
def random_personalizer():
    return PipelinePersonalizer(tiny.pipeline("sd1"), tiny.adapters("sd1")).personalizer


def test_held_out_count_is_ten_percent_from_two_to_twenty():
    assert [held_out_count(n) for n in (3, 10, 25, 50, 199, 1000)] == [2, 2, 2, 5, 20, 20]
    assert held_out_count(10, 7) == 7
    for total, asked in ((2, 0), (10, 1), (5, 5)):
        with pytest.raises(ValueError, match="held out"):
            held_out_count(total, asked)


def test_split_newest_by_timestamp_else_file_order():
    history = History(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0], timestamps=[30.0, 10.0, 40.0, 20.0])
    held, rest = split_newest(history, 2)
    assert held.prompts == ("c", "a") and held.intensities == (3.0, 1.0)
    assert rest.prompts == ("b", "d") and rest.intensities == (2.0, 4.0)
    held, rest = split_newest(History(["a", "b", "c"]), 2)
    assert held.prompts == ("c", "b") and rest.prompts == ("a",)


def test_shuffled_history_keeps_shape_drops_words_and_is_deterministic():
    history = History(WATERCOLOR, [float(i) for i in range(len(WATERCOLOR))], source="mine.txt")
    shuffled = shuffled_history(history, seed=3)
    assert shuffled_history(history, seed=3).prompts == shuffled.prompts  # deterministic
    assert shuffled_history(history, seed=4).prompts != shuffled.prompts  # the seed matters
    assert shuffled.intensities == history.intensities and "shuffled" in shuffled.source
    words = {w for p in WATERCOLOR for w in p.split()}
    for before, after in zip(history.prompts, shuffled.prompts):
        assert sorted(before) == sorted(after)  # the same characters
        assert [len(w) for w in before.split(" ")] == [len(w) for w in after.split(" ")]  # spaces where they were
        assert after != before
    kept = sum(w in words for p in shuffled.prompts for w in p.split() if len(w) > 3)
    assert kept == 0  # no word of four letters or more survives
    assert shuffled_prompt("watercolor fox", "x") == "".join(shuffled_prompt("watercolor fox", "x"))  # pure function


def naive_report_numbers(personalizer, history, control, settings, degrees):
    """The module docstring's numbers restated with Python floats: conditions from the personalizer, scores by hand."""
    sweep = sorted({0.0, *degrees})
    count = held_out_count(len(history), settings.held_out)
    order = list(reversed(range(len(history))))[:count]  # no timestamps: the last lines are the newest
    held = [history.prompts[i] for i in order]
    intensities = [history.intensities[i] for i in order]
    rest = History(
        [p for i, p in enumerate(history.prompts) if i not in order], [w for i, w in enumerate(history.intensities) if i not in order]
    )
    features = text_align_features(personalizer, held).double().tolist()

    def cos(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return dot / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b))

    sides = []
    for side in (rest, control if control is not None else shuffled_history(rest, settings.shuffle_seed)):
        use_profile(personalizer, side, settings)
        target_sum, history_sum = [0.0] * len(sweep), [0.0] * len(sweep)
        for t in range(count):
            pooled = personalizer.condition(held[t], sweep).pooled.double().tolist()
            for j, e in enumerate(pooled):
                target_sum[j] += 100 * cos(e, features[t])
                others = [i for i in range(count) if i != t]
                history_sum[j] += sum(100 * cos(e, features[i]) * intensities[i] for i in others) / sum(intensities[i] for i in others)
        sides.append(([v / count for v in target_sum], [v / count for v in history_sum]))
    (tu, hu), (tc, hc) = sides
    rows = []
    for j, d in enumerate(sweep):
        loss = 100 * (tu[0] - tu[j]) / abs(tu[0])
        edge = (hu[j] - hu[0]) - (hc[j] - hc[0])
        rows.append((d, tu[j], hu[j], tc[j], hc[j], loss, hu[j] - hu[0], hc[j] - hc[0], edge, loss <= 100 * settings.max_target_loss))
    allowed = [(r[8], -r[0]) for r in rows if r[9] and r[8] > settings.min_edge]
    recommended = -max(allowed)[1] if allowed else 0.0
    return rows, recommended


@pytest.mark.parametrize("control", [None, "cars"])
def test_table_matches_a_float64_restatement(personalizer, control):
    intensities = [1.0, 2.0, 0.5, 1.0, 1.5, 1.0, 3.0, 0.25, 1.0, 2.0]  # held-out intensities weigh the History score
    history = History(WATERCOLOR, intensities, source="watercolor.txt")
    control_history = History(CARS, source="cars.txt") if control else None
    report = taste_check(personalizer, history, DEGREES, control_history, SETTINGS)
    rows, recommended = naive_report_numbers(personalizer, history, control_history, SETTINGS, DEGREES)
    assert [r.degree for r in report.rows] == [0.0, *DEGREES]
    for got, want in zip(report.rows, rows):
        numbers = (got.degree, got.target, got.history, got.control_target, got.control_history, got.target_loss, got.gain)
        assert numbers + (got.control_gain, got.edge) == pytest.approx(want[:9], rel=1e-9, abs=1e-9)
        assert got.allowed == want[9]
    assert report.recommended == recommended
    assert report.held_out == WATERCOLOR[::-1][:4]
    assert report.control == ("cars.txt" if control else "your history shuffled (seed 0)")


def test_a_themed_history_beats_both_controls(personalizer):
    """Held-out prompts close to the profile's theme (watercolor): a positive edge over an unrelated person's
    history and over the shuffled copy, at the degree the float64 restatement recommends (1 on these tiny encoders)."""
    history = History(WATERCOLOR, source="watercolor.txt")
    for control in (History(CARS, source="cars.txt"), None):
        report = taste_check(personalizer, history, DEGREES, control, SETTINGS)
        rows, recommended = naive_report_numbers(personalizer, history, control, SETTINGS, DEGREES)
        assert report.recommended == recommended == 1.0
        assert report.best.edge == pytest.approx(rows[-1][8], rel=1e-9) and report.best.edge > 2 * SETTINGS.min_edge
        assert all(r.gain > 0 for r in report.rows[1:])  # the user's own history moves towards the held-out prompts
        assert "recommended degree 1" in report.verdict()


def test_a_history_unrelated_to_its_held_out_part_has_no_edge(personalizer):
    """Profile from cars, held-out prompts watercolor: against another unrelated history (oil seascapes) or the
    shuffled copy the edge stays within UNRELATED_TOLERANCE at every degree whose target loss is at most 2 %.
    (At degree 1, 3.6 % target loss on these tiny encoders, the cars profile is closer to watercolor than the oil one.)"""
    history = History(CARS[:6] + WATERCOLOR[:4], source="mixed.txt")
    settings = TasteSettings(held_out=4, ratio=0.5, max_target_loss=0.02)
    for control in (History(OIL, source="oil.txt"), None):
        report = taste_check(personalizer, history, DEGREES, control, settings)
        edges = [r.edge for r in report.rows if r.allowed]
        assert max(abs(e) for e in edges) < UNRELATED_TOLERANCE, edges
        assert not all(r.allowed for r in report.rows)  # the sweep reached degrees that cost more than 2 % target


def test_recommend_rule():
    def row(degree, loss, edge):
        return TasteRow(degree, 0, 0, 0, 0, loss, 0, 0, edge, loss <= 5)

    rows = [row(0.0, 0, 0), row(0.3, 1, 0.5), row(0.5, 4, 0.9), row(0.7, 6, 3.0), row(1.0, 4.9, 0.9)]
    assert recommend(rows, 0.1) == 0.5  # largest allowed edge; the tie with 1.0 goes to the lower degree
    assert recommend(rows, 1.0) == 0.0  # no allowed edge above min_edge
    assert recommend([row(0.0, 0, 0), row(0.2, 0, -1.0)], 0.0) == 0.0


def test_unit_sweep_is_evenly_spaced_ends_included_and_names_its_quantity():
    assert unit_sweep(0.0, 1.0, 3) == (0.0, 0.5, 1.0)
    assert unit_sweep(0.0, 0.9, 4) == (0.0, 0.3, 0.6, 0.9)
    assert unit_sweep(1.0, 0.0, 5) == (1.0, 0.75, 0.5, 0.25, 0.0)  # a falling sweep is the same steps backwards
    assert unit_sweep(0.2, 0.8, 1) == (0.2,)
    assert unit_sweep(0.1, 0.7, 7) == pytest.approx([0.1 + 0.1 * i for i in range(7)], abs=1e-6)
    with pytest.raises(ValueError, match="a mix sweep needs count >= 1"):
        unit_sweep(0.0, 1.0, 0, "mix")
    with pytest.raises(ValueError, match="degree sweep end must lie in"):
        unit_sweep(0.0, 1.5, 3)


def test_degree_zero_is_always_the_reference_and_bad_settings_are_named(random_personalizer):
    history = History(WATERCOLOR)
    report = taste_check(random_personalizer, history, [0.4], None, TasteSettings(held_out=2))
    assert [r.degree for r in report.rows] == [0.0, 0.4]
    assert report.rows[0].edge == 0.0 and report.rows[0].target == report.rows[0].control_target
    with pytest.raises(ValueError, match="degrees must lie in"):
        taste_check(random_personalizer, history, [1.5])
    with pytest.raises(ValueError, match="max_target_loss"):
        TasteSettings(max_target_loss=-0.1)
    with pytest.raises(ValueError, match="sum to 0"):
        taste_check(random_personalizer, History(WATERCOLOR, [1.0] * 8 + [0.0, 0.0]), [0.3], None, TasteSettings(held_out=2))
    with pytest.raises(ValueError, match="empty"):
        taste_check(random_personalizer, history, [0.3], History([], source="none.txt"))


def test_picture_and_table(personalizer):
    report = taste_check(personalizer, History(WATERCOLOR), DEGREES, History(CARS, source="cars.txt"), SETTINGS)
    image = render_taste(report, (800, 400))
    assert image.size == (800, 400) and image.mode == "RGB"
    pixels = torch.from_numpy(numpy.asarray(image).reshape(-1, 3).astype("int64"))
    assert ((pixels == torch.tensor([230, 110, 20])).all(1)).sum() > 50  # the user's curve is drawn
    assert ((pixels == torch.tensor([90, 110, 160])).all(1)).sum() > 50  # and the control's
    table = report.table()
    assert table.count("\n| ") == len(DEGREES) + 2 and "| 1 * |" in table
    assert report.as_dict()["recommended"] == 1.0


def test_drum_check_tiny_random_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    history = tmp_path / "mine.txt"
    history.write_text("\n".join(WATERCOLOR) + "\n", encoding="utf-8")
    control = tmp_path / "other.txt"
    control.write_text("\n".join(CARS) + "\n", encoding="utf-8")
    out = tmp_path / "plots" / "taste.png"
    argv = ["check", "--tiny-random", "--history", str(history), "--control", str(control), "--out", str(out), "--degrees", "0.5,1"]
    assert cli_main([*argv, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "TINY RANDOM WEIGHTS" in captured.err and f"wrote {out}" in captured.err
    assert "| degree | target | history |" in captured.out and "control: " + str(control) in captured.out
    assert Image.open(out).size == (1024, 512)
    assert cli_main([*argv[:-6], "--json", "--held-out", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["degree"] for r in report["rows"]] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert report["held_out"] == WATERCOLOR[::-1][:3]
    assert report["control"] == "your history shuffled (seed 0)"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--history", "missing.txt"], "missing.txt"),
        (["--history", "{short}"], "needs at least 2 held out"),
        (["--history", "{ok}", "--control", "{bad}"], "bad.json"),
        (["--history", "{ok}", "--adapters", "x"], "--adapters does nothing with --tiny-random"),
        (["--history", "{ok}", "--out", "plot.gif"], "--out plot.gif"),
        (["--history", "{ok}", "--degrees", "0.5,2"], "degrees must lie in [0, 1]"),
        (["--history", "{ok}", "--max-target-loss", "-1"], "--max-target-loss"),
    ],
)
def test_drum_check_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, expected):
    files = {"short": tmp_path / "short.txt", "ok": tmp_path / "ok.txt", "bad": tmp_path / "bad.json"}
    files["short"].write_text("one\ntwo\n", encoding="utf-8")
    files["ok"].write_text("\n".join(WATERCOLOR) + "\n", encoding="utf-8")
    files["bad"].write_text("[1, 2", encoding="utf-8")
    argv = ["check", "--tiny-random", *(a.format(**{k: str(v) for k, v in files.items()}) for a in extra)]
    try:
        status = cli_main(argv)
    except SystemExit as stop:  # argparse's own errors (OneLineParser: one line, status 2)
        status = stop.code
    assert_one_line_error(capsys, "check", status, expected)
