"""A run's results: <out>/results.jsonl (resumable, one line per user) and the summary tables."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from ..atomic import atomic_path
from ..history import History
from ..train.distributed import Processes
from .evaluator import EvalSettings, Evaluator
from .scores import SCORES
from .variants import LABELS

RESULTS = "results.jsonl"  # a single process's file; rank r of a torchrun job appends to results.rank<r>.jsonl


def rank_file(rank: int | None) -> str:
    """The results file a process appends to: results.jsonl alone, results.rank<r>.jsonl under torchrun."""
    return RESULTS if rank is None else f"results.rank{rank}.jsonl"


def results_files(out: str | os.PathLike) -> list[Path]:
    """Every results file in `out` (results.jsonl and any rank's), sorted by name."""
    folder = Path(out)
    return sorted(folder.glob("results.rank*.jsonl")) + ([folder / RESULTS] if (folder / RESULTS).is_file() else [])


def read_results(path: str | os.PathLike, settings: EvalSettings) -> dict[str, dict]:
    """{user: record} of a results file made with `settings` (a torn last line is left out: that user is redone)."""
    path = Path(path)
    wanted = _settings_json(settings)
    lines = path.read_text(encoding="utf-8").splitlines()
    found = json.loads(lines[0]).get("settings") if lines else None
    if lines and found != wanted:
        raise ValueError(f"{path} was made with other settings ({found}); use another --out or the same flags")
    records = {}
    for number, line in enumerate(lines[1:], 2):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line of an interrupted write: redo that user
                break
            raise ValueError(f"{path} line {number}: broken JSON; fix or delete the file") from None
        records[str(record["user"])] = record
    return records


class ResultLog:
    """<out>/results.jsonl (or a rank's file): a settings line, then one line per user (appended, flushed, fsynced)."""

    def __init__(self, path: str | os.PathLike, settings: EvalSettings):
        self.path = Path(path)
        wanted = _settings_json(settings)
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            self.records = read_results(self.path, settings)
            self._rewrite(wanted)  # drops a torn last line
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite(wanted)

    def _rewrite(self, settings: dict) -> None:
        with atomic_path(self.path) as temporary, open(temporary, "w", encoding="utf-8") as f:
            f.write(json.dumps({"settings": settings}) + "\n")
            for record in self.records.values():
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[str(record["user"])] = record


def _settings_json(settings: EvalSettings) -> dict:
    return json.loads(json.dumps(asdict(settings)))


def summarize(records: Iterable[dict], variants: Sequence[str]) -> list[dict]:
    """One row per variant: users, mean scores over users, Imp % of the history scores over the base model."""
    scored = [r for r in records if "scores" in r]
    rows = []
    for variant in variants:
        row = {"variant": variant, "method": LABELS[variant], "users": len(scored)}
        for score in SCORES:
            values = [r["scores"][variant][score] for r in scored if score in r["scores"].get(variant, {})]
            row[score] = sum(values) / len(values) if values else math.nan
        rows.append(row)
    base = rows[0]
    for row in rows:
        for kind in ("clip", "text"):
            reference = base[f"{kind}_history"]
            row[f"{kind}_imp"] = 100 * (row[f"{kind}_history"] - reference) / reference if row is not base and reference else math.nan
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The paper's Table 2/3 shape as markdown: rows = methods; target, history, Imp % per metric."""

    def cell(value: float, signed: bool = False) -> str:
        if value is None or math.isnan(value):
            return "—"
        return f"{value:+.2f}" if signed else f"{value:.2f}"

    lines = [
        "| method | CLIP score: target | history | Imp % | Text align: target | history | Imp % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        clip = (cell(r["clip_target"]), cell(r["clip_history"]), cell(r["clip_imp"], True))
        text = (cell(r["text_target"]), cell(r["text_history"]), cell(r["text_imp"], True))
        lines.append(f"| {r['method']} | {' | '.join(clip)} | {' | '.join(text)} |")
    return "\n".join(lines) + f"\n\n{rows[0]['users'] if rows else 0} users"


def write_summary(out: str | os.PathLike, rows: Sequence[dict]) -> str:
    """summary.csv, summary.json and table.md in `out`; returns the table."""
    out = Path(out)
    fields = ["variant", "method", "users", *SCORES, "clip_imp", "text_imp"]
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows([{k: r[k] for k in fields} for r in rows])
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    (out / "summary.json").write_text(json.dumps(clean, indent=1), encoding="utf-8")
    table = format_table(rows)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    return table


def other_users(users: Mapping[str, History]) -> dict[str, str]:
    """The "other_user" control's fixed derangement: each user -> the next user in `users`' order, the last -> the first
    (no user gets its own history; nobody with a single user)."""
    ids = list(users)
    return {} if len(ids) < 2 else {user: ids[(i + 1) % len(ids)] for i, user in enumerate(ids)}


def run_evaluation(
    evaluator: Evaluator, users: Mapping[str, History], out: str | os.PathLike, progress: bool = True, processes: Processes | None = None
) -> list[dict]:
    """Evaluate every user not yet in a results file of `out`, then gather every file; returns the summary's rows.

    Alone: results.jsonl. Under torchrun (`processes` distributed): every rank reads every results file, then the
    users still to do are dealt out in `users`' order (user j to rank j mod world size) and rank r appends to
    results.rank<r>.jsonl; after a barrier every rank gathers all files. A rerun after a crash of any rank,
    with any number of processes, skips every user already written. The summary averages the records in
    `users`' order, whatever file holds them: the same numbers as one process.
    """
    from tqdm import tqdm

    processes = processes or Processes()
    settings = evaluator.settings
    log = ResultLog(Path(out, rank_file(processes.rank if processes.distributed else None)), settings)
    done = set(log.records)
    for path in results_files(out):
        if path != log.path:
            done |= set(read_results(path, settings))
    processes.barrier()  # every rank knows what is done before any appends
    partner = other_users(users)
    todo = [user for user in users if user not in done][processes.rank :: processes.world_size]
    bar = tqdm(todo, desc="users", unit="user", disable=not progress or processes.rank != 0, dynamic_ncols=True)
    for user in bar:
        other = partner.get(user)
        log.append(evaluator.evaluate(user, users[user], None if other is None else (other, users[other])))
    bar.close()
    processes.barrier()  # every rank has written its users
    records: dict[str, dict] = {}
    for path in results_files(out):
        records.update(read_results(path, settings))
    ordered = [records[user] for user in users if user in records]
    return summarize(ordered, settings.variants)
