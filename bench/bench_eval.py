"""`drum eval` throughput per user: one process against torchrun with 2 CPU processes (gloo), tiny random models.

    python bench/bench_eval.py [--users 16] [--prompts 40] [--images]

Writes --users synthetic PIP users (--prompts prompts each) to a temporary folder and runs
`drum eval --tiny-random --no-images` (Text align; --images adds generation and the CLIP score)
alone and as `torchrun --standalone --nproc-per-node 2`, each into a fresh --out. Prints a
markdown table: wall time of the whole command (process start, model build, users, gather) and
seconds per user. The tiny models measure the engine's own cost (loading, sharding, files,
gather), not a real model's: on real weights the per-user time is the conditions' and images'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEMES = ("watercolor", "oil painting", "photo", "ink sketch", "neon", "pastel", "charcoal", "pixel art")
SUBJECTS = ("a fox", "a lighthouse", "a city street", "a cat", "mountains", "a harbour", "a forest", "an old car")


def write_users(folder: Path, users: int, prompts: int) -> None:
    folder.mkdir()
    for user in range(users):
        theme = THEMES[user % len(THEMES)]
        lines = [json.dumps({"prompt": f"{theme} of {SUBJECTS[(user + i) % len(SUBJECTS)]}, variation {i}"}) for i in range(prompts)]
        (folder / f"user{user:04d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--images", action="store_true", help="also generate images (CLIP score)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drum-bench-eval-") as temporary:
        folder = Path(temporary)
        write_users(folder / "pip", args.users, args.prompts)
        flags = ["--pip", str(folder / "pip"), "--tiny-random", "--no-progress"] + ([] if args.images else ["--no-images"])
        alone = [sys.executable, "-m", "drum_core.evaluate"]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "drum_core.evaluate"]
        print(f"{args.users} users x {args.prompts} prompts, {'images + ' if args.images else ''}Text align, tiny random SD1\n")
        print("| run | wall s | s per user |\n|---|---:|---:|")
        for name, command in (("1 process", alone), ("torchrun, 2 CPU processes (gloo)", torchrun)):
            seconds = run([*command, *flags, "--out", str(folder / name.split(",")[0].replace(" ", "_"))])
            print(f"| {name} | {seconds:.1f} | {seconds / args.users:.2f} |")


if __name__ == "__main__":
    main()
