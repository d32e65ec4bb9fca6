"""History loading speed on large synthetic files.

    python bench/bench_history.py

Writes a 200,000-row CSV, a 200,000-line JSONL and a MovieLens folder of latest-small's size
(100,836 ratings, 9,742 movies, 3,683 tags) to a temporary folder, times each load (best of 3)
and prints a markdown table of rows per second.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from timing import best_of

from drum_core.evaluate.datasets import load_movielens
from drum_core.history import load_history

ROWS = 200_000
MOVIELENS_RATINGS, MOVIELENS_MOVIES, MOVIELENS_TAGS, MOVIELENS_USERS = 100_836, 9_742, 3_683, 610
GENRES = ("Action", "Adventure", "Animation", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi")


def write_lines(path: Path, header: str, lines) -> None:
    """`header` (if any) then one line per item of `lines`, UTF-8."""
    path.write_text("".join(f"{line}\n" for line in ([header] if header else []) + list(lines)), encoding="utf-8")


def write_files(folder: Path) -> tuple[Path, Path, Path]:
    """The CSV, JSONL and MovieLens folder, with prompts of realistic length (~60 characters)."""
    csv_path, jsonl_path, movielens = folder / "history.csv", folder / "history.jsonl", folder / "movielens"
    prompt = "a watercolor painting of a lighthouse on a cliff, number {}"
    write_lines(csv_path, "prompt,rating,timestamp", (f'"{prompt.format(i)}",{i % 5 + 1},{1_700_000_000 + i}' for i in range(ROWS)))
    write_lines(
        jsonl_path,
        "",
        (f'{{"prompt": "{prompt.format(i)}", "rating": {i % 5 + 1}, "timestamp": {1_700_000_000 + i}}}' for i in range(ROWS)),
    )
    movielens.mkdir()
    movies = (f'{m},"Movie {m}, The ({1950 + m % 70})",{GENRES[m % 8]}|{GENRES[(m * 3) % 8]}' for m in range(MOVIELENS_MOVIES))
    write_lines(movielens / "movies.csv", "movieId,title,genres", movies)
    ratings = (
        f"{1 + i * MOVIELENS_USERS // MOVIELENS_RATINGS},{(i * 7919) % MOVIELENS_MOVIES},{(i % 10 + 1) / 2},{964_982_703 + i}"
        for i in range(MOVIELENS_RATINGS)
    )
    write_lines(movielens / "ratings.csv", "userId,movieId,rating,timestamp", ratings)
    tags = (
        f"{1 + (i * 27) * MOVIELENS_USERS // MOVIELENS_RATINGS},{(i * 27 * 7919) % MOVIELENS_MOVIES},tag {i % 50},1"
        for i in range(MOVIELENS_TAGS)
    )
    write_lines(movielens / "tags.csv", "userId,movieId,tag,timestamp", tags)
    return csv_path, jsonl_path, movielens


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        csv_path, jsonl_path, movielens = write_files(Path(folder))
        assert len(load_history(csv_path)) == ROWS and len(load_history(jsonl_path)) == ROWS
        users = load_movielens(movielens)
        assert sum(len(history) for history in users.values()) == MOVIELENS_RATINGS
        cases = [
            (f"CSV, {ROWS:,} rows (prompt, rating, timestamp)", ROWS, lambda: load_history(csv_path)),
            (f"JSONL, {ROWS:,} objects (prompt, rating, timestamp)", ROWS, lambda: load_history(jsonl_path)),
            (
                f"MovieLens, {MOVIELENS_RATINGS:,} ratings, {len(users)} users, with tags",
                MOVIELENS_RATINGS,
                lambda: load_movielens(movielens),
            ),
        ]
        print("| input | seconds | rows/s |")
        print("|---|---:|---:|")
        for name, rows, load in cases:
            seconds = best_of(load, repeats=3, warmup=False)
            print(f"| {name} | {seconds:.2f} | {rows / seconds:,.0f} |")


if __name__ == "__main__":
    main()
