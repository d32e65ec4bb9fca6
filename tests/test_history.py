"""History loading: every format written by the test, every malformed kind with its file and line."""

import json
import math
import re
from datetime import datetime, timezone

import pytest
import torch
from support.tiny_models import tiny_adapter

from drum_core.evaluate.datasets import load_movielens, movielens_prompt
from drum_core.history import History, HistoryError, load_history, mix_histories, parse_history_text, recency_intensities, split_history


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def fails_at(name, line, problem):
    """pytest.raises for a HistoryError naming the file `name`, the line and the problem."""
    return pytest.raises(HistoryError, match=rf"{re.escape(name)} line {line}\b.*{problem}")


# --- formats -------------------------------------------------------------------------------


def test_txt_prompts_ratings_blank_lines_bom_and_crlf(tmp_path):
    path = write(tmp_path, "h.txt", "\ufeffa red fox in snow\t4.5\r\n\r\n  a lighthouse at dusk  \r\nneon city\t0\r\n")
    history = load_history(path)
    assert history.prompts == ("a red fox in snow", "a lighthouse at dusk", "neon city")
    assert history.intensities == (4.5, 1.0, 0.0)
    assert history.timestamps is None and history.is_test is None
    assert history.source == str(path) and len(history) == 3


def test_parse_history_text_uses_the_txt_rules():
    history = parse_history_text("castle on a hill\t2\n\nforest path\n")
    assert history.prompts == ("castle on a hill", "forest path")
    assert history.intensities == (2.0, 1.0)
    assert history.source == "<text>"


def test_csv_common_column_names_any_case_and_quoted_fields(tmp_path):
    content = 'ID,Caption,Score,Created_At\n1,"a cat, sleeping",3,2024-01-02T03:04:05Z\n\n2,"two\nlines",,1700000000\n,,,\n'
    history = load_history(write(tmp_path, "h.csv", content))
    assert history.prompts == ("a cat, sleeping", "two\nlines")
    assert history.intensities == (3.0, 1.0)
    assert history.timestamps == (datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp(), 1700000000.0)


def test_csv_prefers_prompt_over_other_text_columns_and_reads_naive_iso_as_utc(tmp_path):
    content = "title,prompt,weight,date\nignored,the prompt,2,2024-05-01\n"
    history = load_history(write(tmp_path, "h.csv", content))
    assert history.prompts == ("the prompt",)
    assert history.intensities == (2.0,)
    assert history.timestamps == (datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp(),)


def test_tsv(tmp_path):
    history = load_history(write(tmp_path, "h.tsv", "text\trating\na, b, c\t5\nd\t1.5\n"))
    assert history.prompts == ("a, b, c", "d")
    assert history.intensities == (5.0, 1.5)


@pytest.mark.parametrize(
    "document",
    [
        ["a", "b"],
        [{"prompt": "a", "rating": 2}, {"Text": "b"}],
        {"prompts": ["a", {"caption": "b"}]},
        {"meta": {"prompts": 1}, "history": [{"query": "a", "Intensity": 2.0}, "b"]},
    ],
)
def test_json_shapes(tmp_path, document):
    history = load_history(write(tmp_path, "h.json", json.dumps(document, indent=1)))
    assert history.prompts == ("a", "b")
    assert history.intensities[1] == 1.0
    assert history.intensities[0] in (1.0, 2.0)


def test_jsonl_strings_and_objects_with_times(tmp_path):
    content = '"a"\n\n{"prompt": "b", "score": 3, "timestamp": 20}\n'
    with fails_at("h.jsonl", 1, "no timestamp"):
        load_history(write(tmp_path, "h.jsonl", content))
    history = load_history(write(tmp_path, "h.jsonl", '{"prompt": "a", "time": 10}\n{"prompt": "b", "score": 3, "time": 5}\n'))
    assert history.prompts == ("a", "b")
    assert history.intensities == (1.0, 3.0)
    assert history.timestamps == (10.0, 5.0)


def test_pip_markers_with_and_without_quotes(tmp_path):
    content = '"train_samples:"\n{"prompt": "t1"}\n{"prompt": "t2"}\ntest_samples:\n{"prompt": "q1", "query": "a query"}\n'
    history = load_history(write(tmp_path, "user_7.jsonl", content))
    assert history.prompts == ("t1", "t2", "q1")
    assert history.is_test == (False, False, True)
    assert history.subset([2, 0]).is_test == (True, False)


def test_pip_records_before_the_first_marker_are_train_records(tmp_path):
    history = load_history(write(tmp_path, "u.jsonl", '{"prompt": "a"}\n"test_samples:"\n{"prompt": "b"}\n'))
    assert history.is_test == (False, True)


# --- History -----------------------------------------------------------------------------


def test_subset_keeps_everything_aligned_and_takes_coreset_tensors():
    history = History(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0], [40.0, 10.0, 30.0, 20.0], "s", [False, True, False, True])
    picked = history.subset(torch.tensor([3, 1]))
    assert picked.prompts == ("d", "b")
    assert picked.intensities == (4.0, 2.0)
    assert picked.timestamps == (20.0, 10.0)
    assert picked.is_test == (True, True)
    assert picked.source == "s"
    assert History(["a", "b"]).subset([1]).intensities == (1.0,)


def test_most_recent_by_timestamp_ties_by_file_order_else_file_order():
    timed = History(["a", "b", "c", "d"], timestamps=[5.0, 9.0, 5.0, 1.0])
    assert timed.most_recent(3) == [1, 2, 0]
    assert timed.most_recent(10) == [1, 2, 0, 3]
    assert History(["a", "b", "c"]).most_recent(2) == [2, 1]
    assert History(["a"]).most_recent(0) == []
    with pytest.raises(ValueError, match="n >= 0"):
        timed.most_recent(-1)


def test_history_rejects_misaligned_lists_and_bad_weights():
    with pytest.raises(HistoryError, match="mine: 1 intensities for 2 prompts"):
        History(["a", "b"], [1.0], source="mine")
    with pytest.raises(HistoryError, match="mine: 1 timestamps for 2 prompts"):
        History(["a", "b"], timestamps=[1.0], source="mine")
    with pytest.raises(HistoryError, match="intensity -1.0 of prompt 1"):
        History(["a", "b"], [1.0, -1.0], source="mine")


# --- recency, likes / dislikes, mixing ----------------------------------------------------

DAY = 86_400.0


def test_recency_weights_halve_per_half_life_from_the_newest_timestamp():
    history = History(["a", "b", "c", "d"], [2.0, 4.0, 1.0, 3.0], [10 * DAY, 8 * DAY, 4 * DAY, 10 * DAY])
    assert recency_intensities(history, 2.0) == [2.0, 2.0, 0.125, 3.0]  # ages 0, 2, 6, 0 days
    assert recency_intensities(history, 0.0) == [2.0, 4.0, 1.0, 3.0]  # 0 = off
    assert recency_intensities(History(["a", "b"], [2.0, 5.0]), 3.0) == [2.0, 5.0]  # no timestamps: p_i kept
    partial = History(["a", "b", "c"], [1.0, 1.0, 1.0], [0.0, None, 3 * DAY])  # only in code: files are all-or-none
    assert recency_intensities(partial, 3.0) == [0.5, 1.0, 1.0]


def test_recency_weights_match_a_float64_restatement():
    times = [1_700_000_000.0, 1_699_123_456.7, 1_690_000_000.0, 1_700_000_000.0 - 0.5]
    intensities = [4.5, 1.0, 2.0, 0.0]
    decayed = recency_intensities(History(["a", "b", "c", "d"], intensities, times), 7.5)
    newest = max(times)
    expected = [p * math.exp(-math.log(2.0) * (newest - t) / 86_400.0 / 7.5) for p, t in zip(intensities, times)]
    assert decayed == pytest.approx(expected, rel=1e-14, abs=0)


def test_recency_reads_iso_dates_from_files_and_rejects_bad_half_lives(tmp_path):
    history = load_history(
        write(tmp_path, "h.csv", "prompt,rating,date\nnew,4,2024-05-08\nweek old,4,2024-05-01\nmonth old,2,2024-04-10\n")
    )
    assert recency_intensities(history, 7.0) == [4.0, 2.0, 2.0 * 0.5**4]
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="half_life_days"):
            recency_intensities(history, bad)


def test_split_history_likes_keep_ratings_dislikes_weigh_the_distance_below_the_threshold():
    ratings = [5.0, 3.0, 1.0, 2.5, 4.0]
    history = History(["a", "b", "c", "d", "e"], [0.5] * 5, [1.0, 2.0, 3.0, 4.0, 5.0], "mine", ratings=ratings)  # decayed intensities
    likes, dislikes = split_history(history, 3.0)
    assert (likes.prompts, likes.intensities, likes.timestamps) == (
        ("a", "b", "e"),
        (5.0, 3.0, 4.0),
        (1.0, 2.0, 5.0),
    )  # 3 == threshold: a like
    assert (dislikes.prompts, dislikes.intensities, dislikes.timestamps) == (("c", "d"), (2.0, 0.5), (3.0, 4.0))
    assert likes.ratings == (5.0, 3.0, 4.0) and dislikes.ratings == (1.0, 2.5)  # what the user said is kept
    assert "mine" in likes.source and "likes" in likes.source and "dislikes" in dislikes.source
    assert history.source == "mine"  # the input is not touched
    with pytest.raises(ValueError, match="threshold"):
        split_history(history, math.nan)


def test_split_history_leaves_unrated_records_out_of_both_sides(tmp_path):
    none_liked, none_disliked = split_history(History(["x", "y"]), 3.0)  # no ratings at all
    assert none_liked.prompts == () and none_disliked.prompts == ()
    partly = History(["x", "y", "z"], [1.0, 4.0, 1.0], ratings=[None, 4.0, 1.0])
    likes, dislikes = split_history(partly, 3.0)
    assert (likes.prompts, likes.intensities, dislikes.prompts, dislikes.intensities) == (("y",), (4.0,), ("z",), (2.0,))
    # a file where some rows are rated: the empty rating cell is unrated (intensity 1.0, rating None)
    loaded = load_history(write(tmp_path, "h.csv", "prompt,rating\nliked,5\nplain,\nhated,0\n"))
    assert loaded.intensities == (5.0, 1.0, 0.0) and loaded.ratings == (5.0, None, 0.0)
    likes, dislikes = split_history(loaded, 3.0)
    assert (likes.prompts, dislikes.prompts, dislikes.intensities) == (("liked",), ("hated",), (3.0,))
    assert load_history(write(tmp_path, "h.txt", "a\nb\n")).ratings is None


def test_history_is_immutable_and_stores_tuples():
    history = History(["a", "b"], [1, 2], [1.0, 2.0], "s", [False, True], [None, 3])
    assert history.prompts == ("a", "b") and history.intensities == (1.0, 2.0) and history.ratings == (None, 3.0)
    assert history.is_test == (False, True) and History(["a"]).intensities == (1.0,)
    with pytest.raises(AttributeError):
        history.source = "other"
    assert history.with_intensities([3.0, 4.0]).ratings == (None, 3.0) and history.intensities == (1.0, 2.0)
    with pytest.raises(HistoryError, match="1 ratings for 2 prompts"):
        History(["a", "b"], ratings=[1.0])
    with pytest.raises(HistoryError, match="rating -1.0 of prompt 0"):
        History(["a"], ratings=[-1.0])


def test_mix_histories_scales_both_sides_to_one_total_and_merges_shared_prompts():
    a = History(["x", "y"], [1.0, 3.0], source="A")  # total 4
    b = History(["z", "y", "w"], [2.0, 2.0, 4.0], source="B")  # total 8
    mixed = mix_histories(a, b, 0.25)
    # S = 0.75 * 4 + 0.25 * 8 = 5; a's prompts x 0.75 * 5 / 4, b's x 0.25 * 5 / 8; "y" once, summed
    assert mixed.prompts == ("x", "y", "z", "w")
    assert mixed.intensities == (0.9375, 3 * 0.9375 + 2 * 0.15625, 0.3125, 0.625)
    assert sum(mixed.intensities) == 5.0 and 0.9375 + 3 * 0.9375 == 0.75 * 5.0  # A holds the share 1 - t
    assert mixed.timestamps is None and "A" in mixed.source and "B" in mixed.source
    assert mix_histories(a, b, 0.0) is a and mix_histories(a, b, 1.0) is b  # a side of share 0 adds nothing


def test_a_merged_shared_prompt_conditions_like_its_two_copies():
    """Why mix_histories merges a prompt both sides hold: PeCA sums identical references' intensities."""
    adapter = tiny_adapter("L", seed=3).double()
    g = torch.Generator().manual_seed(4)
    query, target = torch.randn(1, 78, 768, generator=g, dtype=torch.float64), torch.randn(1, 77, 768, generator=g, dtype=torch.float64)
    shared, other = torch.randn(2, 1, 77, 768, generator=g, dtype=torch.float64)
    copies = adapter(query, target, torch.cat([shared, other, shared]), torch.tensor([1.0, 0.5, 2.0]), degree=0.6)
    merged = adapter(query, target, torch.cat([shared, other]), torch.tensor([3.0, 0.5]), degree=0.6)
    for twice, once in zip(copies, merged):
        torch.testing.assert_close(twice, once, rtol=1e-12, atol=1e-12)


def test_mix_histories_restated_in_float64():
    a = History([f"a{i}" for i in range(5)], [0.5, 1.7, 3.0, 4.2, 2.2])
    b = History([f"b{i}" for i in range(3)], [10.0, 30.5, 7.25])
    for t in (0.1, 0.3, 0.5, 0.9):
        common = (1 - t) * sum(a.intensities) + t * sum(b.intensities)
        expected = [(1 - t) * p * common / sum(a.intensities) for p in a.intensities] + [
            t * p * common / sum(b.intensities) for p in b.intensities
        ]
        assert mix_histories(a, b, t).intensities == pytest.approx(expected, rel=1e-15, abs=0)


def test_mix_histories_empty_or_zero_sides_timestamps_and_bad_mix():
    b = History(["z", "w"], [2.0, 6.0], [10.0, 20.0])
    empty = History([])
    assert (mix_histories(empty, b, 0.25).prompts, mix_histories(empty, b, 0.25).intensities) == (("z", "w"), (0.5, 1.5))
    assert mix_histories(empty, b, 0.0).prompts == () and mix_histories(empty, empty, 0.5).prompts == ()
    zero = History(["q"], [0.0], [15.0])
    assert mix_histories(zero, b, 0.5).intensities == (0.0, 1.0, 3.0)  # S = b's total; q carries no intensity
    assert mix_histories(zero, b, 0.5).timestamps == (15.0, 10.0, 20.0)
    shared = mix_histories(History(["w"], [1.0], [5.0]), b, 0.5)
    assert shared.prompts == ("w", "z") and shared.timestamps == (20.0, 10.0)  # merged: the newer time
    assert mix_histories(History(["w"]), b, 0.5).timestamps is None  # one side without times: none
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="mix"):
            mix_histories(b, b, bad)


# --- malformed input ---------------------------------------------------------------------


def test_empty_files(tmp_path):
    for name, content in [("e.txt", ""), ("e.csv", "prompt,rating\n"), ("e.json", "[]"), ("blank.json", " \n")]:
        with fails_at(name, 1, "no prompts found"):
            load_history(write(tmp_path, name, content))
    with fails_at("e.jsonl", 2, "no prompts found"):
        load_history(write(tmp_path, "e.jsonl", "\n\n"))
    with fails_at("blank.txt", 3, "no prompts found"):
        load_history(write(tmp_path, "blank.txt", "\n  \n\t\n"))
    with fails_at("markers.jsonl", 2, "no prompts found"):
        load_history(write(tmp_path, "markers.jsonl", "train_samples:\ntest_samples:\n"))


def test_no_prompt_column_lists_the_columns(tmp_path):
    with fails_at("cols.csv", 2, r"no prompt column; columns found: \['id', 'rating'\]"):
        load_history(write(tmp_path, "cols.csv", "\nid,rating\n1,2\n"))
    with fails_at("semi.csv", 1, "';'-separated"):
        load_history(write(tmp_path, "semi.csv", "prompt;rating\na;2\n"))


@pytest.mark.parametrize(
    ("name", "content", "line", "problem"),
    [
        ("r.csv", "prompt,rating\na,1\nb,high\n", 3, "rating 'high' is not a number"),
        ("r.tsv", "prompt\trating\na\t-2\n", 2, "rating '-2' must be a finite number >= 0"),
        ("r.txt", "a\t1\nb\tnan\n", 2, "rating 'nan' must be a finite number"),
        ("r.txt", "a\tfive\n", 1, "is not a number .text after the last TAB"),
        ("r.json", '[\n  {"prompt": "a", "rating": NaN}\n]', 2, r"item 1\): rating nan must be a finite"),
        ("r.jsonl", '{"prompt": "a"}\n{"prompt": "b", "rating": Infinity}\n', 2, "rating inf must be a finite"),
        ("r.jsonl", '{"prompt": "a", "rating": 1e999}\n', 1, "rating inf must be"),
        ("r.jsonl", '{"prompt": "a", "weight": true}\n', 1, "rating must be a number, got bool"),
        ("r.jsonl", '{"prompt": "a", "rating": [1]}\n', 1, "rating must be a number, got list"),
        ("t.csv", "prompt,timestamp\na,yesterday\n", 2, "timestamp 'yesterday' is neither a number nor an ISO-8601 date"),
    ],
)
def test_bad_ratings_and_timestamps(tmp_path, name, content, line, problem):
    with fails_at(name, line, problem):
        load_history(write(tmp_path, name, content))


def test_broken_json_names_line_and_column(tmp_path):
    with fails_at("b.json", 3, "broken JSON at column 18: Expecting ',' delimiter"):
        load_history(write(tmp_path, "b.json", '[\n  "a",\n  {"prompt": "b" "rating": 1}\n]'))
    with fails_at("b.jsonl", 2, "broken JSON at column 16"):
        load_history(write(tmp_path, "b.jsonl", '{"prompt": "a"}\n{"prompt": "b",}\n'))


@pytest.mark.parametrize(
    ("name", "content", "line", "problem"),
    [
        ("w.json", '[\n  "a",\n  7\n]', 3, r"item 2\): expected a prompt string or an object, got int 7"),
        ("w.json", '{"other": 1,\n "prompts": [\n  {"prompt": 5}]}', 3, r"item 1\): 'prompt' must be a string, got int 5"),
        ("w.json", '{"prompts": "a"}', 1, "'prompts' must be a list"),
        ("w.json", '{"users": []}', 1, r"found keys \['users'\]"),
        ("w.json", "42", 1, "the document must be a list"),
        ("w.jsonl", '"a"\n[1, 2]\n', 2, "got list"),
        ("w.jsonl", '{"prompt": "a"}\n{"rating": 2, "id": 1}\n', 2, r"no prompt field \(keys found: \['id', 'rating'\]"),
    ],
)
def test_wrong_types(tmp_path, name, content, line, problem):
    with fails_at(name, line, problem):
        load_history(write(tmp_path, name, content))


@pytest.mark.parametrize(
    ("name", "content", "line", "problem"),
    [
        ("p.json", '[\n  "a",\n  "   "\n]', 3, r"item 2\): empty prompt"),
        ("p.jsonl", '{"prompt": "a"}\n{"text": ""}\n', 2, "empty 'text'"),
        ("p.csv", 'prompt,rating\na,1\n"",2\n', 3, "empty 'prompt'"),
        ("p.txt", "a\n\t3\n", 2, "empty prompt"),
        ("short.csv", "id,rating,prompt\n1,2,a\n2,3\n", 3, r"row has 2 fields, so no 'prompt' \(column 3\)"),
    ],
)
def test_empty_prompts_and_short_rows(tmp_path, name, content, line, problem):
    with fails_at(name, line, problem):
        load_history(write(tmp_path, name, content))


def test_undecodable_bytes_name_line_and_column(tmp_path):
    with fails_at("latin1.txt", 2, "byte 0xe9 at column 4 is not UTF-8"):
        load_history(write(tmp_path, "latin1.txt", "a cat\ncaf\xe9 noir\n".encode("latin-1")))
    with fails_at("bom.csv", 3, "byte 0xff at column 1"):
        load_history(write(tmp_path, "bom.csv", b"\xef\xbb\xbfprompt\nok\n\xff\n"))


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("q.csv", 'prompt,rating\na fox,3\n"an owl at dawn,4\nthe sea,2\nlast,1\n', 3),  # a rating column: still the quote
        ("q.csv", 'prompt\na fox\n"an owl\nthe sea\n', 3),
        ("q.csv", 'prompt,rating\na,1\n"multi\nline",2\n"b,2\n', 5),  # after a closed multi-line cell
        ("q.csv", 'prompt,rating\r\na,1\r\n"b,2\r\n', 3),
        ("q.tsv", 'prompt\trating\nx\t1\n"y\t2\n', 3),
    ],
)
def test_an_unclosed_quote_names_the_line_where_it_opened(tmp_path, name, content, line):
    with fails_at(name, line, r"a quote \(\"\) opens a cell here and is never closed"):
        load_history(write(tmp_path, name, content))


def test_quotes_that_close_or_sit_inside_a_cell_are_read(tmp_path):
    history = load_history(write(tmp_path, "ok.csv", 'prompt,rating\na 5" statue,3\n"multi\nline, ""quoted""",2\n'))
    assert list(history.prompts) == ['a 5" statue', 'multi\nline, "quoted"'] and list(history.intensities) == [3.0, 2.0]


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(HistoryError, match=r"notes\.docx: unknown history file extension '\.docx'"):
        load_history(write(tmp_path, "notes.docx", "a"))
    with pytest.raises(FileNotFoundError, match=r"history file not found: .*absent\.txt"):
        load_history(tmp_path / "absent.txt")


def test_unreadable_csv_row(tmp_path):
    with fails_at("nul.csv", 2, "unreadable row"):
        load_history(write(tmp_path, "nul.csv", "prompt\n" + "x" * 200_000 + "\n"))


def test_200k_rows_of_csv_and_jsonl(tmp_path):
    rows = 200_000
    csv_path = write(
        tmp_path, "big.csv", "prompt,rating,timestamp\n" + "".join(f"prompt number {i},{i % 5 + 1},{i}\n" for i in range(rows))
    )
    history = load_history(csv_path)
    assert len(history) == rows and history.prompts[-1] == f"prompt number {rows - 1}"
    assert history.intensities[:3] == (1.0, 2.0, 3.0) and history.timestamps[-1] == rows - 1
    jsonl_path = write(tmp_path, "big.jsonl", "".join(f'{{"prompt": "p{i}", "rating": 2}}\n' for i in range(rows)))
    assert len(load_history(jsonl_path)) == rows


# --- MovieLens ---------------------------------------------------------------------------


def movielens_folder(tmp_path, ratings=None, tags=True):
    write(
        tmp_path,
        "movies.csv",
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n99,Untitled Short (2001),(no genres listed)\n',
    )
    write(
        tmp_path,
        "ratings.csv",
        ratings or "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,11,0.5,964981247\n2,99,5.0,1445714835\n2,1,3.5,1445714999\n",
    )
    if tags:
        write(tmp_path, "tags.csv", "userId,movieId,tag,timestamp\n1,1,pixar,1\n1,1,Fun,2\n1,1,pixar,3\n2,11,politics,4\n")
    return tmp_path


def test_movielens_with_tags(tmp_path):
    histories = load_movielens(movielens_folder(tmp_path))
    assert sorted(histories) == [1, 2]
    first, second = histories[1], histories[2]
    assert first.prompts == (
        "Toy Story (1995), an adventure, animation, children, comedy, fantasy movie; tags: pixar, fun",
        "The American President (1995), a comedy, drama, romance movie",
    )
    assert first.intensities == (4.0, 0.5)
    assert first.timestamps == (964982703.0, 964981247.0)
    assert first.most_recent(1) == [0]
    assert second.prompts == (
        "Untitled Short (2001), a movie",
        "Toy Story (1995), an adventure, animation, children, comedy, fantasy movie",
    )
    assert second.source == str(tmp_path / "ratings.csv")


def test_movielens_user_filter_and_no_tags_file(tmp_path):
    histories = load_movielens(movielens_folder(tmp_path, tags=False), users=[2])
    assert list(histories) == [2]
    assert histories[2].intensities == (5.0, 3.5)
    with pytest.raises(HistoryError, match=r"ratings\.csv: no ratings for user\(s\) \[3\]"):
        load_movielens(tmp_path, users=[2, 3])


@pytest.mark.parametrize(
    ("ratings", "line", "problem"),
    [
        ("userId,movieId,rating,timestamp\n1,1,4,1\n1,7,3,2\n", 3, r"movieId 7 is not in movies\.csv"),
        ("userId,movieId,rating,timestamp\n1,1,-1,1\n", 2, r"\(userId 1\): rating '-1' must be a finite number >= 0"),
        ("userId,movieId,rating,timestamp\nuser,1,4,1\n", 2, "userId 'user' is not an integer"),
        ("userId,movieId,stars\n1,1,4\n", 1, r"missing column\(s\) \['rating', 'timestamp'\]"),
    ],
)
def test_movielens_errors(tmp_path, ratings, line, problem):
    with fails_at("ratings.csv", line, problem):
        load_movielens(movielens_folder(tmp_path, ratings))


def test_movielens_missing_folder_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"movies\.csv"):
        load_movielens(tmp_path)


def test_movielens_prompt_template():
    assert movielens_prompt("Lord of the Rings, The", "Action|IMAX", ["epic"]) == "The Lord of the Rings, an action, imax movie; tags: epic"
    assert movielens_prompt("Heat (1995)", "") == "Heat (1995), a movie"
    aka = movielens_prompt("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "Drama")
    assert aka == "The City of Lost Children (Cité des enfants perdus, La) (1995), a drama movie"
