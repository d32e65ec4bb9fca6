"""The evaluation's users: PIP (one JSONL file per user) and MovieLens latest-small (one history per userId).

    pip_users(folder)           {file stem: History}; PIP's train_samples: / test_samples: markers are read by load_history
    load_movielens(folder)      {userId: History}: ratings.csv, movies.csv and the optional tags.csv
    movielens_prompt(...)       the offline prompt of one rated movie

Every malformed file raises HistoryError "<file> line <n>: <problem>"; a missing one FileNotFoundError naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..history import History, HistoryError, _csv_rows, _header, _read_text, _Records, load_history

MOVIELENS_ARTICLE_TITLE = re.compile(r"^(.+?), (The|A|An)( \(.*)?$")  # "American President, The (1995)"


def _movielens_table(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line, cells in `required` order) of a MovieLens CSV file."""
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens file not found: {path}")
    rows = _csv_rows(_read_text(path), str(path))
    header_line, names = _header(rows, str(path))
    missing = [name for name in required if name.lower() not in names]
    if missing:
        raise HistoryError(f"{path} line {header_line}: missing column(s) {missing}; columns found: {names}")
    columns = [names.index(name.lower()) for name in required]
    width = max(columns) + 1
    for line, row in rows:
        if len(row) < width:
            raise HistoryError(f"{path} line {line}: row has {len(row)} fields, expected at least {width}")
        yield line, [row[column] for column in columns]


def _movielens_id(path: Path, line: int, value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HistoryError(f"{path} line {line}: {name} {value!r} is not an integer") from None


def movielens_prompt(title: str, genres: str, tags: Sequence[str] = ()) -> str:
    """The prompt for one rated movie; a trailing English article moves to the front:

    ("American President, The (1995)", "Comedy|Drama|Romance", ["politics"])
    -> "The American President (1995), a comedy, drama, romance movie; tags: politics"
    """
    inverted = MOVIELENS_ARTICLE_TITLE.match(title)
    if inverted:
        title = f"{inverted[2]} {inverted[1]}{inverted[3] or ''}"
    kinds = [] if genres.strip() in ("", "(no genres listed)") else [g.strip().lower() for g in genres.split("|")]
    article = "an" if kinds and kinds[0][0] in "aeiou" else "a"
    prompt = f"{title}, {article} {', '.join(kinds)} movie" if kinds else f"{title}, a movie"
    return f"{prompt}; tags: {', '.join(tags)}" if tags else prompt


def load_movielens(folder: str | Path, users: Iterable[int] | None = None) -> dict[int, History]:
    """One History per user of a MovieLens latest-small folder, in ratings.csv order.

    ratings.csv (userId, movieId, rating, timestamp) gives the intensities and times; each prompt is
    movielens_prompt(title, genres, that user's own tags of the movie from the optional tags.csv).
    `users` keeps only those user ids (every one must have ratings).
    """
    folder = Path(folder)
    movies_path, ratings_path, tags_path = folder / "movies.csv", folder / "ratings.csv", folder / "tags.csv"
    wanted = None if users is None else {int(user) for user in users}
    movies: dict[int, tuple[str, str]] = {}
    for line, (movie, title, genres) in _movielens_table(movies_path, ("movieId", "title", "genres")):
        movies[_movielens_id(movies_path, line, movie, "movieId")] = (title.strip(), genres)
    tags: dict[tuple[int, int], list[str]] = {}
    if tags_path.is_file():
        for line, (user, movie, tag) in _movielens_table(tags_path, ("userId", "movieId", "tag")):
            user_tags = tags.setdefault(
                (_movielens_id(tags_path, line, user, "userId"), _movielens_id(tags_path, line, movie, "movieId")), []
            )
            if tag.strip() and tag.strip().lower() not in user_tags:
                user_tags.append(tag.strip().lower())
    untagged: dict[int, str] = {}
    per_user: dict[int, _Records] = {}
    for line, (user_text, movie_text, rating, timestamp) in _movielens_table(ratings_path, ("userId", "movieId", "rating", "timestamp")):
        user = _movielens_id(ratings_path, line, user_text, "userId")
        if wanted is not None and user not in wanted:
            continue
        movie = _movielens_id(ratings_path, line, movie_text, "movieId")
        if movie not in movies:
            raise HistoryError(f"{ratings_path} line {line}: movieId {movie} is not in {movies_path.name}")
        user_tags = tags.get((user, movie))
        if user_tags:
            prompt = movielens_prompt(*movies[movie], user_tags)
        else:
            prompt = untagged.get(movie)
            if prompt is None:
                prompt = untagged[movie] = movielens_prompt(*movies[movie])
        records = per_user.get(user)
        if records is None:
            records = per_user[user] = _Records(str(ratings_path), lambda line, user=user: f"line {line} (userId {user})")
        records.add(line, prompt, rating, timestamp)
    absent = sorted(wanted - per_user.keys()) if wanted is not None else []
    if absent or not per_user:
        raise HistoryError(f"{ratings_path}: no ratings for user(s) {absent}" if absent else f"{ratings_path} line 2: no ratings found")
    return {user: records.finish(0) for user, records in per_user.items()}


def pip_users(path: str | os.PathLike) -> dict[str, History]:
    """PIP per-user JSONL files (user id = file name without .jsonl): a folder of them or one file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"PIP data not found: {path}")
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise HistoryError(f"{path}: no .jsonl files (PIP keeps one JSONL file per user)")
    return {f.stem: load_history(f) for f in files}


def movielens_users(folder: str | os.PathLike) -> dict[str, History]:
    """MovieLens latest-small: one history per userId."""
    return {str(user): history for user, history in sorted(load_movielens(folder).items())}
