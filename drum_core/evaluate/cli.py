"""`drum eval` / `python -m drum_core.evaluate`: the command line of the evaluation."""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch

from ..cli import BAD_INPUT, INTERRUPTED, OneLineParser, one_line, parse_command_line, refuse_idle_flags
from ..defaults import DEGREE, MOVIELENS_DEGREE, RATIO, SEED, K
from ..dtypes import DTYPE_NAMES, parse_dtype
from ..train.distributed import Processes
from .clip_scorer import ClipScorer, tiny_clip_scorer
from .datasets import movielens_users, pip_users
from .evaluator import EvalSettings, Evaluator
from .results import run_evaluation, write_summary
from .variants import VARIANTS


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="drum eval", description="CLIP score and Text align of DrUM and its ablations (the paper's Tables 2/3).")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--pip", help="PIP: folder of per-user .jsonl files (or one file)")
    data.add_argument("--movielens", help="MovieLens latest-small folder (ratings.csv, movies.csv)")
    parser.add_argument("--model", help="diffusers pipeline folder or hub id")
    parser.add_argument(
        "--tiny-random", action="store_true", help="tiny random pipeline, adapters and CLIP (checks the install; scores are noise)"
    )
    parser.add_argument(
        "--family", default="sd1", choices=["sd1", "sd2", "sdxl", "sd3", "flux"], help="family of the --tiny-random pipeline"
    )
    parser.add_argument("--adapters", help="folder with L/H/bigG/T5.safetensors (default: the usual search, then the hub)")
    parser.add_argument("--clip-model", default="openai/clip-vit-large-patch14", help="CLIP for the CLIP score (transformers id/folder)")
    parser.add_argument(
        "--out", required=True, help="folder: results.jsonl (results.rank<r>.jsonl under torchrun; resumable), summary.csv/json, table.md"
    )
    parser.add_argument("--users", type=int, help="evaluate only the first N users (sorted ids)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--degree",
        "--alpha",  # the paper's name for the degree
        dest="degree",
        type=float,
        help=f"personalization degree, the paper's alpha (default {DEGREE} on PIP, {MOVIELENS_DEGREE} on MovieLens, as the paper)",
    )
    parser.add_argument("--ratio", type=float, default=RATIO, help="coreset share of the history")
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--coreset-seed", type=int, default=SEED)
    parser.add_argument("--no-images", action="store_true", help="Text align only (no generation, no CLIP score)")
    parser.add_argument("--save-images", action="store_true", help="keep the generated images in <out>/images/<user>/")
    parser.add_argument("--steps", type=int, help="denoising steps (default 50; 2 with --tiny-random)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the pipeline's)")
    parser.add_argument("--size", type=int, help="image height and width (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (the same for every variant)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="pipeline precision (default float16 on GPU, float32 on CPU)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


# flags (argparse dest names) that do nothing in a mode; one given there is refused
REAL_MODEL_FLAGS = ("model", "adapters", "clip_model", "dtype")  # not with --tiny-random
TINY_FLAGS = ("family",)  # only with --tiny-random
IMAGE_FLAGS = ("clip_model", "save_images", "steps", "guidance", "size", "seed")  # not with --no-images


def check_flags(args: argparse.Namespace, given: set[str]) -> None:
    """ValueError for a missing flag the mode needs, or flags (`given`: dest names written) that would do nothing in it."""

    refuse = functools.partial(refuse_idle_flags, given)

    if args.tiny_random:
        refuse(REAL_MODEL_FLAGS, "with --tiny-random (it builds its own tiny random pipeline, adapters and CLIP)")
    elif not args.model:
        raise ValueError("--model (or --tiny-random) is required")
    else:
        refuse(TINY_FLAGS, "without --tiny-random")
    if args.no_images:
        refuse(IMAGE_FLAGS, "with --no-images (no image is generated)")


def main(argv: list[str] | None = None) -> int:
    """`drum eval ...`: 0 done, 2 bad input (one line on stderr), 130 interrupted (results so far are kept; re-run to go on)."""
    args, given = parse_command_line(build_parser(), argv)
    try:
        check_flags(args, given)
        return _evaluate(args)
    except KeyboardInterrupt:
        print(f"\ninterrupted; results so far are in {args.out}/results*.jsonl: run the same command to go on", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError) as error:  # bad input: one line, no traceback
        print(f"drum eval: {one_line(error)}", file=sys.stderr)
        return BAD_INPUT


def _evaluate(args: argparse.Namespace) -> int:
    processes = Processes.start(args.device)  # under torchrun: this rank's place and device (gloo on CPU, NCCL on GPU)
    try:
        return _evaluate_users(args, processes)
    finally:
        if processes.distributed:
            torch.distributed.destroy_process_group()


def _evaluate_users(args: argparse.Namespace, processes: Processes) -> int:
    device = processes.device
    users = pip_users(args.pip) if args.pip else movielens_users(args.movielens)
    if args.users is not None:
        users = dict(list(users.items())[: args.users])
    settings = EvalSettings(
        degree=args.degree if args.degree is not None else (DEGREE if args.pip else MOVIELENS_DEGREE),
        ratio=args.ratio,
        k=args.k,
        coreset_seed=args.coreset_seed,
        variants=tuple(dict.fromkeys(["base", *args.variants])),
        images=not args.no_images,
        steps=args.steps or (2 if args.tiny_random else 50),
        guidance=args.guidance,
        size=args.size,
        seed=args.seed,
    )
    pipe, adapters, scorer = _load(args, device, settings.images)
    pipe.set_progress_bar_config(disable=True)  # one bar, over users
    image_folder = os.path.join(args.out, "images") if args.save_images else None
    evaluator = Evaluator(pipe, settings, adapters, scorer, image_folder)
    rows = run_evaluation(evaluator, users, args.out, progress=not args.no_progress, processes=processes)
    if processes.rank == 0:  # the gather step: one process writes the table
        print(write_summary(args.out, rows))
    return 0


def _load(args: argparse.Namespace, device: torch.device, images: bool):
    """(pipeline, adapters, CLIP scorer or None) for the flags."""
    if args.tiny_random:
        from .. import tiny

        adapters = {name: adapter.to(device) for name, adapter in tiny.adapters(args.family).items()}
        return tiny.pipeline(args.family).to(device), adapters, tiny_clip_scorer(device=device) if images else None
    from diffusers import DiffusionPipeline

    dtype = parse_dtype(args.dtype or ("float16" if device.type == "cuda" else "float32"))
    from ..weights import hub_location

    def located(name: str, flag: str) -> str:  # a hub id checked with one request: unreachable or wrong = one line
        return name if os.path.isdir(name) else hub_location(name, flag)

    model, clip_model = located(args.model, "--model"), located(args.clip_model, "--clip-model") if images else None
    pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    scorer = ClipScorer.from_pretrained(clip_model, device) if images else None
    return pipe, args.adapters, scorer
