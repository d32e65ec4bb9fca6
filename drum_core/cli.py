"""The `drum` command line.

    drum personalize --model FOLDER|HUB_ID --history FILE --prompt TEXT [--alpha 0.3] [--out image.png]
    drum personalize --tiny-random [--family sd1|sd2|sdxl|sd3|flux] [--history FILE] [--prompt TEXT]
    drum profile     --model FOLDER|HUB_ID --history FILE [--ratio 0.1] [--json]
    drum train ...   (drum_core.train.cli)    drum eval ...   (drum_core.evaluate.cli)

Adapter weights are looked up BEFORE the diffusion model is loaded, so a missing file is
reported at once. Exit status: 0 done, 2 bad input or missing weights, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

TINY_BANNER = "TINY RANDOM WEIGHTS — verifies the install, the image is noise"
INTERRUPTED = 130
BAD_INPUT = 2
SUBCOMMANDS = {"train": "drum_core.train.cli", "eval": "drum_core.evaluate.cli"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drum", description="DrUM: personalize text-to-image generation from a user's prompt history.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{personalize,profile,train,eval}")

    def model_and_history(command: argparse.ArgumentParser) -> None:
        command.add_argument("--model", help="diffusers pipeline folder or hub id (SD1, SD2, SDXL, SD3, FLUX)")
        command.add_argument("--history", help="prompt history: .txt (one prompt a line, optional TAB rating), .csv, .tsv, .json, .jsonl")
        command.add_argument("--ratio", type=float, default=0.1, help="share of the history the coreset keeps (default 0.1)")
        command.add_argument("--max-references", type=int, help="keep at most this many references")
        command.add_argument("--k", type=int, default=10, help="size of the coreset's random approximation set")
        command.add_argument("--coreset-seed", type=int, default=42)
        command.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: cuda if available, else cpu)")
        command.add_argument("--cache", help="folder for cached history encodings (reused across runs)")
        command.add_argument("--no-progress", action="store_true", help="no progress bars")

    run = commands.add_parser("personalize", help="generate an image personalized by a prompt history")
    model_and_history(run)
    run.add_argument("--prompt", help="the target prompt")
    run.add_argument(
        "--alpha",
        type=_alphas,
        default=[0.3],
        help="personalization degree in [0, 1] (default 0.3); several, comma-separated (0,0.3,0.6), give one image "
        "per degree from the same noise, side by side in --out",
    )
    run.add_argument("--out", default="drum.png", help="output PNG (default drum.png)")
    run.add_argument("--adapters", help="folder holding L/H/bigG/T5.safetensors (default: $DRUM_WEIGHTS, ComfyUI models/drum, hub)")
    run.add_argument("--steps", type=int, help="denoising steps (default 30; 2 with --tiny-random)")
    run.add_argument("--guidance", type=float, help="guidance scale (default: the pipeline's)")
    run.add_argument("--size", type=int, help="image height and width (default: the model's)")
    run.add_argument("--seed", type=int, default=0, help="noise seed")
    run.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model precision (default float16 on GPU, float32 on CPU)")
    run.add_argument("--clip-skip", type=int, help="diffusers clip_skip (context layer below the default)")
    run.add_argument("--tiny-random", action="store_true", help=f"{TINY_BANNER}: tiny random pipeline and adapters, no downloads")
    run.add_argument("--family", default="sd1", choices=["sd1", "sd2", "sdxl", "sd3", "flux"], help="family of the --tiny-random pipeline")

    profile = commands.add_parser("profile", help="show which history prompts the coreset keeps, with intensities")
    model_and_history(profile)
    profile.add_argument("--json", action="store_true", help="print JSON")
    profile.add_argument("--tiny-random", action="store_true", help=f"{TINY_BANNER}: a tiny random CLIP-L encoder")

    for name in SUBCOMMANDS:
        commands.add_parser(name, help=f"see `drum {name} --help`", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `drum` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from .history import HistoryError
    from .weights import AdapterNotFoundError

    try:
        return personalize(args) if args.command == "personalize" else profile(args)
    except KeyboardInterrupt:
        print("\ndrum: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (AdapterNotFoundError, HistoryError, ValueError, OSError) as error:
        print(f"drum {args.command}: {error}", file=sys.stderr)
        return BAD_INPUT


def _delegate(command: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module(SUBCOMMANDS[command])
    except ModuleNotFoundError as error:
        if error.name != SUBCOMMANDS[command]:
            raise
        print(f"drum {command}: not available in this install ({SUBCOMMANDS[command]} is missing)", file=sys.stderr)
        return BAD_INPUT
    try:
        return module.main(argv)
    except KeyboardInterrupt:
        print(f"\ndrum {command}: interrupted", file=sys.stderr)
        return INTERRUPTED


# ---------------------------------------------------------------------------------- helpers
def _alphas(text: str) -> list[float]:
    """ "0.3" or "0,0.3,0.6" -> degrees."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"degrees must be numbers separated by commas, got {text!r}") from None


def _side_by_side(images: list):
    """PIL images -> one image, left to right (a single image is returned as it is)."""
    if len(images) == 1:
        return images[0]
    from PIL import Image

    row = Image.new("RGB", (sum(image.width for image in images), max(image.height for image in images)))
    x = 0
    for image in images:
        row.paste(image, (x, 0))
        x += image.width
    return row


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _history(args: argparse.Namespace):
    from . import tiny
    from .history import History, load_history

    if args.history:
        return load_history(args.history)
    if args.tiny_random:
        return History(list(tiny.HISTORY), source="built-in tiny history")
    raise ValueError("--history is required (a .txt file with one prompt a line, or .csv/.tsv/.json/.jsonl)")


class _Bars:
    """One tqdm bar per stage, fed by progress(stage, done, total)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage not in self.bars:
            self.close()  # the previous stage is over
            self.bars[stage] = tqdm(total=total, desc=stage, unit="prompt", dynamic_ncols=True, file=sys.stderr)
        bar = self.bars[stage]
        bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}


def _cache(args: argparse.Namespace):
    from .cache import EmbeddingCache

    return EmbeddingCache(args.cache)


def _print_profile(profile, source: str, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"history": source, **profile.as_dict()}, ensure_ascii=False, indent=2))
        return
    print(f"{source}: {profile.total} prompts; the coreset keeps {len(profile.indices)}:")
    print(f"{'rank':>4} {'index':>6} {'intensity':>9}  prompt")
    for rank, (index, weight, prompt) in enumerate(zip(profile.indices, profile.intensities, profile.prompts), 1):
        print(f"{rank:>4} {index:>6} {weight:>9.3g}  {prompt}")


# ---------------------------------------------------------------------------------- commands
def personalize(args: argparse.Namespace) -> int:
    """`drum personalize`: history -> coreset -> PeCA -> pipeline -> PNG."""
    import torch

    from . import tiny
    from .diffusers_pipelines import PipelinePersonalizer, folder_encoder_names
    from .personalizer import ENCODER_ADAPTERS, detect_family
    from .weights import load_adapters

    if args.tiny_random:
        print(TINY_BANNER, file=sys.stderr)
    elif not args.model:
        raise ValueError("--model is required (a diffusers folder or hub id), or --tiny-random to verify the install")
    if not args.tiny_random and not args.prompt:
        raise ValueError("--prompt is required")
    bad = [alpha for alpha in args.alpha if not 0.0 <= alpha <= 1.0]
    if bad:
        raise ValueError(f"--alpha must lie in [0, 1], got {bad[0]}")
    history = _history(args)
    device = _device(args.device)
    if args.tiny_random:
        pipe, adapters = tiny.pipeline(args.family), {n: a.to(device) for n, a in tiny.adapters(args.family).items()}
        prompt, steps, size = args.prompt or "a lighthouse on a cliff at dusk", args.steps or 2, args.size or tiny.IMAGE_SIZE
        pipe.to(device)
    else:
        names = folder_encoder_names(args.model)  # configs only: fail on weights before loading the model
        detect_family(names)
        adapters = load_adapters([ENCODER_ADAPTERS[n] for n in names], args.adapters, device=device)
        from diffusers import DiffusionPipeline

        dtype = getattr(torch, args.dtype or ("float32" if device == "cpu" else "float16"))
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype to dtype; older ones know only torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype).to(device)
        prompt, steps, size = args.prompt, args.steps or 30, args.size
    bars = _Bars(not args.no_progress)
    try:
        session = PipelinePersonalizer(pipe, adapters, _cache(args), args.clip_skip, bars)
        profile = session.set_history(history, args.ratio, args.max_references, args.k, args.coreset_seed)
        kwargs = session.kwargs(prompt, args.alpha if len(args.alpha) > 1 else args.alpha[0])
    finally:
        bars.close()
    degrees = ", ".join(f"{alpha:g}" for alpha in args.alpha)
    print(f"{session.family}: {len(profile.indices)} of {profile.total} history prompts as references, alpha {degrees}", file=sys.stderr)
    if args.guidance is not None:
        kwargs["guidance_scale"] = args.guidance
    if size is not None:
        kwargs["height"] = kwargs["width"] = size
    pipe.set_progress_bar_config(disable=args.no_progress)
    generators = [torch.Generator("cpu").manual_seed(args.seed) for _ in args.alpha]  # the same noise per degree
    image = _side_by_side(pipe(**kwargs, num_inference_steps=steps, generator=generators).images)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(f"wrote {out}" + (f" ({TINY_BANNER})" if args.tiny_random else ""))
    return 0


def profile(args: argparse.Namespace) -> int:
    """`drum profile`: the prompts coreset sampling keeps, with their intensities."""
    from . import tiny
    from .diffusers_pipelines import SLOTS, first_clip, folder_encoder_names, profile_history
    from .encoders import HFClipBackend

    if args.tiny_random:
        print(TINY_BANNER, file=sys.stderr)
        tokenizer = tiny.clip_tokenizer()
        encoder = HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH), tokenizer)
    elif not args.model:
        raise ValueError("--model is required (a diffusers folder or hub id): the coreset reads its first CLIP text encoder")
    else:
        import transformers
        from diffusers import DiffusionPipeline

        names = folder_encoder_names(args.model)
        slot = names[first_clip(names)]
        index = DiffusionPipeline.load_config(os.fspath(args.model))
        tokenizer_slot = dict(SLOTS)[slot]
        model = getattr(transformers, index[slot][1]).from_pretrained(args.model, subfolder=slot).to(_device(args.device))
        tokenizer = getattr(transformers, index[tokenizer_slot][1]).from_pretrained(args.model, subfolder=tokenizer_slot)
        encoder = HFClipBackend(model, tokenizer)
    history = _history(args)
    bars = _Bars(not args.no_progress and not args.json)
    try:
        result = profile_history(encoder, history, args.ratio, args.max_references, args.k, args.coreset_seed, _cache(args), bars)
    finally:
        bars.close()
    _print_profile(result, history.source, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
