"""drum_core.ratings: the likes / dislikes file (store, format, atomic and concurrent changes, bounds, bad files)."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from drum_core.history import split_history
from drum_core.ratings import (
    DISLIKE_RATING,
    LIKE_RATING,
    MAX_PROMPT_CHARS,
    RatedImage,
    Ratings,
    RatingsError,
    RatingsFull,
    load_ratings,
    rating_value,
    ratings_stamp,
)

REPO = Path(__file__).resolve().parents[1]


def test_words_and_constants_separate_at_history_splits_default_threshold():
    assert (rating_value("like"), rating_value("dislike"), rating_value("clear")) == (5.0, 1.0, None)
    assert (LIKE_RATING, DISLIKE_RATING) == (5.0, 1.0)
    for word in ("Like", "up", "", None, 5, ["like"]):
        with pytest.raises(RatingsError, match="rating must be one of like, dislike, clear"):
            rating_value(word)
    # History Split's default threshold (3.0): a like is a like with p = 5, a dislike a dislike with p = 3 - 1 = 2.
    from drum_core.history import parse_history_text

    likes, dislikes = split_history(parse_history_text(f"liked\t{LIKE_RATING}\ndisliked\t{DISLIKE_RATING}"), 3.0)
    assert (list(likes.prompts), list(likes.intensities)) == (["liked"], [5.0])
    assert (list(dislikes.prompts), list(dislikes.intensities)) == (["disliked"], [2.0])


def test_rate_rerate_clear_and_the_file_as_written(tmp_path):
    path = tmp_path / "user" / "__drum" / "ratings.json"  # the folder is created on the first rating
    store = Ratings(path)
    assert store.records() == [] and load_ratings(path) == {} and ratings_stamp(path) is None
    first = store.rate("output", "a/ComfyUI_00001_.png", LIKE_RATING, ["a red fox"], when=100.0)
    assert first == RatedImage("output", "a/ComfyUI_00001_.png", 5.0, ("a red fox",), 100.0)
    store.rate("output", "ComfyUI_00002_.png", DISLIKE_RATING, ["grey fog", "second sampler"], when=200.0)
    store.rate("temp", "ComfyUI_temp_xyz_00001_.png", LIKE_RATING, [], when=300.0)
    stamp = ratings_stamp(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "format": "drum-ratings",
        "version": 1,
        "ratings": [
            {"kind": "output", "image": "a/ComfyUI_00001_.png", "rating": 5.0, "prompts": ["a red fox"], "time": 100.0},
            {"kind": "output", "image": "ComfyUI_00002_.png", "rating": 1.0, "prompts": ["grey fog", "second sampler"], "time": 200.0},
            {"kind": "temp", "image": "ComfyUI_temp_xyz_00001_.png", "rating": 5.0, "prompts": [], "time": 300.0},
        ],
    }
    assert load_ratings(path) == {"a/ComfyUI_00001_.png": 5.0, "ComfyUI_00002_.png": 1.0}
    assert load_ratings(path, "temp") == {"ComfyUI_temp_xyz_00001_.png": 5.0}
    # Re-rating replaces (one record per image, the new time), clearing removes, clearing twice changes nothing.
    store.rate("output", "a/ComfyUI_00001_.png", DISLIKE_RATING, ["a red fox"], when=400.0)
    assert ratings_stamp(path) != stamp
    assert [(r.key, r.rating, r.time) for r in store.records()] == [
        ("ComfyUI_00002_.png", 1.0, 200.0),
        ("ComfyUI_temp_xyz_00001_.png", 5.0, 300.0),
        ("a/ComfyUI_00001_.png", 1.0, 400.0),
    ]
    assert store.rate("output", "ComfyUI_00002_.png", None) is None
    assert store.get("output", "ComfyUI_00002_.png") is None and store.get("temp", "ComfyUI_temp_xyz_00001_.png").rating == 5.0
    before = path.read_bytes()
    assert store.rate("output", "never/rated.png", None) is None and path.read_bytes() == before
    assert Ratings(path).ratings() == {"a/ComfyUI_00001_.png": 1.0}  # a second store on the file sees the same
    assert sorted(p.name for p in path.parent.iterdir()) == ["ratings.json", "ratings.json.lock"]  # no temporary file left


@pytest.mark.parametrize(
    "key", ["../outside.png", "/etc/passwd", "a/../../b.png", "a//b.png", "./a.png", "a\\b.png", "a\x00.png", "", "x" * 1025]
)
def test_keys_that_are_not_a_relative_path_inside_the_folder_are_refused(tmp_path, key):
    with pytest.raises(RatingsError, match="image key"):
        Ratings(tmp_path / "r.json").rate("output", key, LIKE_RATING)
    assert not (tmp_path / "r.json").exists()


def test_kinds_and_ratings_are_checked(tmp_path):
    store = Ratings(tmp_path / "r.json")
    with pytest.raises(RatingsError, match="image type must be one of output, temp, not 'input'"):
        store.rate("input", "a.png", LIKE_RATING)
    for bad in (float("nan"), float("inf"), -1.0, True, "5"):
        with pytest.raises(RatingsError, match="rating must be a finite number >= 0"):
            store.rate("output", "a.png", bad)
    with pytest.raises(RatingsError, match="prompts must be strings"):
        store.rate("output", "a.png", LIKE_RATING, [3])
    assert not (tmp_path / "r.json").exists()


def test_prompt_text_is_bounded_and_cut_visibly(tmp_path):
    record = Ratings(tmp_path / "r.json").rate("output", "a.png", LIKE_RATING, ["x" * (MAX_PROMPT_CHARS + 50), "dropped"])
    assert record.prompts == ("x" * (MAX_PROMPT_CHARS - 1) + "…",)
    assert Ratings(tmp_path / "r.json").get("output", "a.png").prompts == record.prompts


def test_bounds_refuse_a_new_image_but_allow_rerating_and_clearing(tmp_path):
    path = tmp_path / "r.json"
    store = Ratings(path, max_records=3)
    for i in range(3):
        store.rate("output", f"{i}.png", LIKE_RATING, [f"prompt {i}"], when=float(i))
    before = path.read_bytes()
    with pytest.raises(RatingsFull, match=r"r\.json: already 3 rated images, the most a ratings file keeps; clear some first"):
        store.rate("temp", "3.png", LIKE_RATING)
    assert path.read_bytes() == before
    store.rate("output", "1.png", DISLIKE_RATING)  # re-rating an image already kept
    store.rate("output", "0.png", None)
    store.rate("output", "3.png", LIKE_RATING)
    assert store.ratings() == {"1.png": 1.0, "2.png": 5.0, "3.png": 5.0}
    # The byte bound: a rating that would make the file larger than it is refused, the file kept.
    small = Ratings(path, max_bytes=len(path.read_bytes()) + 40)
    before = path.read_bytes()
    with pytest.raises(RatingsFull, match="larger than"):
        small.rate("output", "4.png", LIKE_RATING, ["a prompt long enough to pass the bound"])
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "drum-ratings", "version": 1, "ratings": [\n  {"kind": "output"\n', r"r\.json line 3: not valid JSON"),
        ("", r"r\.json line 1: not valid JSON"),
        ('["a.png"]', r"r\.json: not a DrUM ratings file"),
        ('{"format": "drum-ratings", "version": 2, "ratings": []}', r"r\.json: ratings file version 2 is not 1"),
        (
            '{"format": "drum-ratings", "version": 1, "ratings": [\n  {"kind": "output", "image": "a.png", "rating": 5, "prompts": [], "time": 1},\n'
            '  {"kind": "output", "image": "../b.png", "rating": 5, "prompts": [], "time": 1}\n]}',
            r"r\.json line 3: image key '\.\./b\.png' is not a relative",
        ),
        (
            '{"format": "drum-ratings", "version": 1, "ratings": [\n  {"kind": "output", "image": "a.png", "rating": "good", "prompts": [], "time": 1}\n]}',
            r"r\.json line 2: rating must be a finite number",
        ),
        (
            '{"format": "drum-ratings", "version": 1, "ratings": [\n  {"kind": "output", "image": "a.png", "rating": 5, "prompts": [], "time": 1},\n'
            '  {"kind": "output", "image": "a.png", "rating": 1, "prompts": [], "time": 2}\n]}',
            r"r\.json line 3: image output/a\.png rated twice",
        ),
        (
            '{"format": "drum-ratings", "version": 1, "ratings": [{"kind": "output", "image": "a.png", "rating": 5, "time": null}]}',
            r"line 1: time must be",
        ),
    ],
)
def test_a_bad_file_is_a_named_error_and_never_emptied(tmp_path, text, message):
    path = tmp_path / "r.json"
    path.write_text(text, encoding="utf-8")
    for read in (lambda: load_ratings(path), lambda: Ratings(path).records()):
        with pytest.raises(RatingsError, match=message):
            read()
    with pytest.raises(RatingsError, match=message):
        Ratings(path).rate("output", "new.png", LIKE_RATING)
    with pytest.raises(RatingsError, match=message):
        Ratings(path).rate("output", "a.png", None)
    assert path.read_text(encoding="utf-8") == text


def test_a_file_past_the_size_bound_or_not_utf8_is_a_named_error(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(RatingsError, match=r"r\.json: ratings file is not UTF-8 text"):
        load_ratings(path)
    Ratings(tmp_path / "ok.json").rate("output", "a.png", LIKE_RATING, ["p" * 100])
    with pytest.raises(RatingsError, match=r"ok\.json: ratings file of \d+ bytes is larger than the 64 bytes"):
        Ratings(tmp_path / "ok.json", max_bytes=64).records()


def test_concurrent_clicks_from_threads_never_lose_a_rating(tmp_path):
    path = tmp_path / "r.json"
    barrier = threading.Barrier(8)
    errors = []

    def click(worker: int) -> None:
        store = Ratings(path)  # a store each: the file lock, not the store's own lock, must keep them apart
        barrier.wait()
        try:
            for i in range(10):
                store.rate("output", f"w{worker}/{i}.png", LIKE_RATING if i % 2 else DISLIKE_RATING, [f"prompt {worker} {i}"])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=click, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert load_ratings(path) == {f"w{w}/{i}.png": (5.0 if i % 2 else 1.0) for w in range(8) for i in range(10)}


def test_concurrent_clicks_from_processes_never_lose_a_rating(tmp_path):
    path = tmp_path / "r.json"
    start = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "from drum_core.ratings import Ratings\n"
        "path, start, worker = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "while not os.path.exists(start): time.sleep(0.001)\n"
        "store = Ratings(path)\n"
        "for i in range(15): store.rate('output', f'p{worker}/{i}.png', 5.0, [f'prompt {i}'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", script, str(path), str(start), str(w)], env=env) for w in range(3)]
    start.touch()
    assert [w.wait() for w in workers] == [0] * 3
    assert load_ratings(path) == {f"p{w}/{i}.png": 5.0 for w in range(3) for i in range(15)}
