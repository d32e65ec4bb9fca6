"""`drum history import` and `--history FOLDER`: a CSV history from the images' metadata; bad input is one line, exit 2."""

import json

from support.cli_errors import assert_one_line_error
from support.output_images import flux_graph, outputs, primitive_graph, save_png, sd1_graph

from drum_core.cli import main
from drum_core.history import load_history


def test_import_writes_a_csv_that_load_history_reads_oldest_first(tmp_path, capsys):
    folder = outputs(tmp_path)
    (folder / "random.png").write_bytes(b"not a png at all")
    out = tmp_path / "history.csv"
    assert main(["history", "import", str(folder), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"5 prompts from 6 images read (1 skipped: 1 not an image) -> {out}"
    history = load_history(out)
    assert history.prompts == ("first", "second", "a harbour in watercolor", "a lighthouse at dusk", "first")
    assert history.timestamps == (1000.0, 2000.0, 3000.0, 4000.0, 5000.0) and history.ratings is None


def test_import_of_several_sources_with_dedupe_and_since(tmp_path, capsys):
    folder = outputs(tmp_path)
    extra = save_png(tmp_path / "extra.png", flux_graph(), mtime=4500)
    out = tmp_path / "d.csv"
    assert main(["history", "import", str(folder), str(extra), "--out", str(out), "--dedupe", "--since", "1970-01-01T00:40:00"]) == 0
    history = load_history(out)  # since 2400 s: "first" at 1000 is out, the one at 5000 in
    assert history.prompts == ("a harbour in watercolor", "a lighthouse at dusk", "first")
    assert history.intensities == (1.0, 2.0, 1.0) and history.timestamps == (3000.0, 4500.0, 5000.0)
    assert main(["history", "import", str(folder), "--out", str(out), "--since", "0"]) == 2  # nothing newer than now
    assert_one_line_error(capsys, "history import", 2, "no prompt found in 0 images read", "not written")


def test_history_flag_takes_a_folder_of_images(tmp_path, capsys):
    save_png(tmp_path / "a.png", sd1_graph("a red fox in the snow"), mtime=10)
    save_png(tmp_path / "b.png", primitive_graph(), mtime=20)
    assert main(["profile", "--tiny-random", "--history", str(tmp_path), "--ratio", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert sorted(p["prompt"] for p in shown["picked"]) == ["a harbour in watercolor", "a red fox in the snow"]


def test_import_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    save_png(tmp_path / "plain.png")
    cases = [
        (["history", "import", str(tmp_path / "missing"), "--out", str(tmp_path / "h.csv")], ["not found", "missing"]),
        (["history", "import", str(tmp_path), "--out", str(tmp_path / "no" / "h.csv")], ["folder", "not found"]),
        (["history", "import", str(tmp_path), "--out", str(tmp_path / "h.txt")], ["CSV"]),
        (["history", "import", str(tmp_path), "--out", str(tmp_path / "h.csv")], ["1 no metadata"]),
        (["history", "import", str(tmp_path), "--out", str(tmp_path / "h.csv"), "--since", "yesterday"], ["ISO date"]),
        (["history", "import", str(tmp_path), "--out", str(tmp_path / "h.csv"), "--since", "-1"], [">= 0"]),
    ]
    for argv, expected in cases:
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code
        assert_one_line_error(capsys, "history import" if argv[0] == "history" else argv[0], status, *expected)
    assert not (tmp_path / "h.csv").exists()
    assert main(["profile", "--tiny-random", "--no-progress", "--history", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the tiny-random banner
    assert err == f"drum profile: {tmp_path}: no prompt found in 1 images read (1 skipped: 1 no metadata)"
