"""`drum train` / `python -m drum_core.train` / `torchrun -m drum_core.train`: the command line of adapter training.

Exit status: 0 done (or stopped by --max-steps), 2 bad input (one line on stderr: a missing or empty caption
file, an encoder that cannot be opened, a flag that does nothing in this mode, a checkpoint of another run),
130 / 143 stopped by SIGINT / SIGTERM with a checkpoint saved.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch

from ..cli import BAD_INPUT, INTERRUPTED, OneLineParser, one_line, parse_command_line, refuse_idle_flags
from ..dtypes import DTYPE_NAMES, dtype_name
from ..encoder_factory import open_encoder
from .caption_cache import CaptionCache, build_caption_cache
from .captions import CaptionSource, CaptionSplit
from .checkpoints import CheckpointError
from .data import CachedCaptions, Captions, StreamedCaptions
from .distributed import Processes
from .recipe import TrainOptions
from .trainer import Trainer

# flags that only act in some modes (argparse dest names); one given where it does nothing is refused
TRAINING_FLAGS = (
    "out", "export", "layers", "batch_size", "micro_batch", "epochs", "lr", "weight_decay", "betas", "eps", "warmup_steps", "dropout",
    "seed", "shuffle_buffer", "save_every", "validate_every", "max_steps", "precision", "no_tensorboard",
)  # fmt: skip
CACHE_BUILD_FLAGS = ("cache_dtype", "shard_rows", "encode_batch")
ENCODING_FLAGS = ("captions", "format", "column", "validation_fraction", "validation_size", "encoder_dtype", "encoder_layers")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="drum train",
        description="Train a PeCA adapter on captions by self-reconstruction (the published DrUM recipe). "
        "Re-run the same command to resume an interrupted run.",
    )
    parser.add_argument(
        "--encoder",
        help="text encoder: clip-l, openclip-h, openclip-bigg, t5-xxl, tiny-clip, tiny-t5, a transformers path/id, "
        "or open_clip:<model>:<pretrained> (e.g. open_clip:ViT-bigG-14:laion2b_s39b_b160k, open_clip:local-dir:<folder>)",
    )
    autocast_choices = ["auto", *(name for name in DTYPE_NAMES if dtype_name(name) != "float16")]  # no fp16: it needs loss scaling
    parser.add_argument("--encoder-dtype", default="fp32", choices=DTYPE_NAMES, help="precision of the frozen encoder")
    parser.add_argument(
        "--encoder-layers",
        type=int,
        help="open_clip encoders: use the first N text blocks as the encoder (23 for ViT-H-14 as SD2 / the published H adapter)",
    )
    parser.add_argument("--captions", nargs="+", help="caption files or folders (.txt, CC3M .tsv, .csv, .parquet)")
    parser.add_argument("--format", default="auto", choices=["auto", "text", "tsv", "csv", "parquet"])
    parser.add_argument("--column", help="CSV/Parquet column (default: caption, text, txt or prompt)")
    parser.add_argument("--out", help="run folder: checkpoint.pt, metrics.csv, loss.png, tensorboard/, the adapter (not with --cache-only)")
    parser.add_argument("--export", help="adapter file to write at the end (default <out>/<L|H|bigG|T5|adapter>.safetensors)")
    parser.add_argument("--cache", help="caption cache folder: encode the captions once into it, then train from it")
    parser.add_argument("--cache-only", action="store_true", help="build the --cache and exit (no training flags)")
    parser.add_argument("--cache-dtype", default="float16", choices=DTYPE_NAMES, help="precision of the cached states")
    parser.add_argument("--shard-rows", type=int, default=1024, help="captions per cache shard")
    parser.add_argument("--layers", type=int, default=10, help="PeCA blocks")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch, over all processes")
    parser.add_argument("--micro-batch", type=int, help="per-process micro-batch (gradient accumulation up to the batch)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=0.2)
    parser.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--warmup-steps", type=int, default=2500)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-fraction", type=float, default=0.001, help="held-out share of captions (by hash)")
    parser.add_argument("--validation-size", type=int, default=2048, help="held-out captions used for validation")
    parser.add_argument("--shuffle-buffer", type=int, default=100_000, help="shuffle buffer for streamed captions")
    parser.add_argument("--encode-batch", type=int, default=64, help="captions per encoder call while building the cache")
    parser.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps")
    parser.add_argument("--validate-every", type=int, default=1000, help="validation loss every N steps")
    parser.add_argument(
        "--max-steps",
        type=int,
        help="stop after N optimizer steps in all: the adapter so far and loss.png are written, the checkpoint kept (re-run to go on)",
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available; torchrun: the local GPU)")
    parser.add_argument("--precision", default="auto", choices=autocast_choices, help="bf16 autocast or fp32 (auto: bf16 on CUDA)")
    parser.add_argument("--no-tensorboard", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def check_flags(args: argparse.Namespace, given: set[str]) -> None:
    """ValueError for a missing flag the mode needs, or flags (`given`: dest names written) that would do nothing in it."""

    refuse = functools.partial(refuse_idle_flags, given)
    for name in ("shard_rows", "encode_batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {getattr(args, name)}")
    if not 0 <= args.validation_fraction < 1:  # also refuses nan
        raise ValueError(f"--validation-fraction must be in [0, 1), got {args.validation_fraction}")
    if args.validation_size < 0:
        raise ValueError(f"--validation-size must be a whole number >= 0, got {args.validation_size}")

    if args.cache_only:
        if not args.cache:
            raise ValueError("--cache-only needs --cache (the folder to encode the captions into)")
        refuse(TRAINING_FLAGS, "with --cache-only (it encodes the captions into the cache and exits)")
    elif not args.out:
        raise ValueError("--out is required (the run folder)")
    if args.cache:
        refuse(("shuffle_buffer",), "with --cache (every epoch is a full random permutation of the cache)")
    else:
        refuse(CACHE_BUILD_FLAGS, "without --cache")
    if _finished_cache(args) and not args.encoder:
        refuse(ENCODING_FLAGS + CACHE_BUILD_FLAGS, f"with the finished caption cache {args.cache} (its captions are encoded already)")
    elif not args.encoder or not args.captions:
        raise ValueError("--encoder and --captions are required (or --cache with a finished cache)")


def _options(args: argparse.Namespace) -> TrainOptions:
    return TrainOptions(
        out=args.out,
        batch_size=args.batch_size,
        micro_batch=args.micro_batch,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        betas=tuple(args.betas),
        eps=args.eps,
        warmup_steps=args.warmup_steps,
        dropout=args.dropout,
        seed=args.seed,
        layers=args.layers,
        shuffle_buffer=args.shuffle_buffer,
        save_every=args.save_every,
        validate_every=args.validate_every,
        max_steps=args.max_steps,
        precision=args.precision,
        export=args.export,
        tensorboard=not args.no_tensorboard,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    """`drum train ...`: returns the exit status (0 done, 2 bad input, 130/143 stopped by SIGINT/SIGTERM)."""
    args, given = parse_command_line(build_parser(), argv)
    try:
        check_flags(args, given)
        options = None if args.cache_only else _options(args)  # every value checked before anything loads
        processes = Processes.start(args.device)
        try:
            data = _open_data(args, processes)
            if data is None:
                return 0
            result = Trainer(options, data, processes).run()
        finally:
            if processes.distributed:
                torch.distributed.destroy_process_group()
    except KeyboardInterrupt:  # while opening the encoder or building the cache (training itself saves a checkpoint)
        print("\ndrum train: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError, CheckpointError) as error:  # bad input: one line, no traceback
        print(f"drum train: {one_line(error)}", file=sys.stderr)
        return BAD_INPUT
    if processes.rank == 0:
        if result.finished:
            print(f"adapter written to {result.adapter_path}")
        else:
            where = f"adapter of step {result.step} written to {result.adapter_path}; " if result.adapter_path else ""
            print(f"stopped at step {result.step}/{result.total_steps}; {where}checkpoint in {args.out}: run the same command to go on")
    if result.stop_signal is not None:
        return 128 + result.stop_signal
    return 0


def _finished_cache(args: argparse.Namespace) -> bool:
    return bool(args.cache) and os.path.isfile(os.path.join(args.cache, "index.json"))


def _open_data(args: argparse.Namespace, processes: Processes) -> Captions | None:
    """The training data the flags ask for (check_flags has passed); None after --cache-only."""
    if _finished_cache(args) and not args.encoder:
        cache = CaptionCache(args.cache)  # a finished cache needs no encoder
    else:
        split = CaptionSplit(CaptionSource.of(args.captions, args.format, args.column), args.validation_fraction, args.validation_size)
        split.source.check_text()  # a missing or binary caption file fails before a large encoder is loaded
        backend = open_encoder(args.encoder, processes.device, args.encoder_dtype, args.encoder_layers)
        if not args.cache:
            return StreamedCaptions(split, backend, args.shuffle_buffer, args.seed)
        counter = _progress_counter(enabled=not args.no_progress and processes.rank == 0)
        cache = build_caption_cache(
            args.cache,
            split,
            backend,
            shard_rows=args.shard_rows,
            encode_batch=args.encode_batch,
            dtype=args.cache_dtype,
            rank=processes.rank,
            world_size=processes.world_size,
            progress=counter.update,
            barrier=processes.barrier,
        )
        counter.close()
        cache.check_encoder(backend)
    if args.cache_only:
        if processes.rank == 0:
            print(f"caption cache ready: {cache.train_count} training + {cache.validation_count} validation captions in {args.cache}")
        return None
    return CachedCaptions(cache, args.seed)


def _progress_counter(enabled: bool):
    from tqdm import tqdm

    return tqdm(desc="encoding captions", unit="caption", disable=not enabled, dynamic_ncols=True)
