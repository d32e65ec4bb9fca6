"""The `drum` command line.

    drum personalize --model FOLDER|HUB_ID --history FILE --prompt TEXT [--degree 0.3] [--out image.png]
    drum personalize --tiny-random [--family sd1|sd2|sdxl|sd3|flux] [--history FILE] [--prompt TEXT]
    drum profile     --model FOLDER|HUB_ID --history FILE [--ratio 0.1] [--json] [--save PROFILE.safetensors]
    drum profile     --load PROFILE.safetensors [--model FOLDER|HUB_ID] [--json]
    drum check       --model FOLDER|HUB_ID --history FILE [--control FILE] [--out plot.png]  (drum_core.taste)
    drum history import SOURCE... --out FILE.csv [--dedupe] [--since DAYS|DATE]
    drum train ...   (drum_core.train.cli)    drum eval ...   (drum_core.evaluate.cli)

Adapter weights are looked up BEFORE the diffusion model is loaded, so a missing file is
reported at once. Exit status: 0 done, 2 bad input or missing weights (one line on stderr,
`drum <command>: <problem>`, never a traceback), 130 interrupted (Ctrl-C). A flag that would do
nothing in the mode asked for (`--adapters` with `--tiny-random`, ...) is refused the same way.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from . import defaults
from .coreset import DEFAULT_MAX_COUNT
from .dtypes import DTYPE_NAMES, parse_dtype
from .history import HISTORY_EXTENSIONS

TINY_BANNER = "TINY RANDOM WEIGHTS — verifies the install, the image is noise"
TINY_CHECK_BANNER = "TINY RANDOM WEIGHTS — verifies the install; the scores are noise"
TINY_PROFILE_BANNER = "TINY RANDOM WEIGHTS — verifies the install; a random encoder picks the prompts, not their meaning"
INTERRUPTED = 130
BAD_INPUT = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SUBCOMMANDS = {"train": "drum_core.train.cli", "eval": "drum_core.evaluate.cli"}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (`drum personalize: <problem> (see ...)`), exit 2.

    Abbreviated options are not accepted, so the flags given can be told from the argv (`given_flags`).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def number_in(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """An argparse `type` parsing `kind` (int or float) within [low, high] ((low, high] with low_open); finite."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            lowest, highest = ("-inf" if low is None else f"{low:g}"), ("inf" if high is None else f"{high:g}")
            bounds = f"{'(' if low_open else '['}{lowest}, {highest}]"
            raise argparse.ArgumentTypeError(f"must lie in {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE = number_in(int, 1)
SEED = number_in(int, 0, 2**64 - 1)


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """`dest` of every option of `parser` written in `argv` (`--flag value` or `--flag=value`)."""
    written = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    return {action.dest for action in parser._actions if written & set(action.option_strings)}


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, set[str]]:
    """(arguments, `given_flags`) of `argv` (sys.argv[1:] when None) for a subcommand's parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args(argv), given_flags(parser, argv)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="drum", description="DrUM: personalize text-to-image generation from a user's prompt history.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{personalize,profile,check,history,train,eval}")

    def model_and_history(command: argparse.ArgumentParser) -> None:
        command.add_argument("--model", help="diffusers pipeline folder or hub id (SD1, SD2, SDXL, SD3, FLUX)")
        command.add_argument("--history", help=HISTORY_HELP)
        command.add_argument(
            "--ratio",
            type=number_in(float, 0, 1, low_open=True),
            default=defaults.RATIO,
            help=f"share of the history the coreset keeps, in (0, 1] (default {defaults.RATIO})",
        )
        command.add_argument(
            "--max-count",
            type=number_in(int, 0),
            default=DEFAULT_MAX_COUNT,
            help=f"keep at most this many references (default {DEFAULT_MAX_COUNT}; 0 = no limit, the paper's rule)",
        )
        command.add_argument("--k", type=POSITIVE, default=defaults.K, help="size of the coreset's random approximation set")
        command.add_argument("--coreset-seed", type=SEED, default=defaults.SEED)
        command.add_argument(
            "--coreset-mode",
            choices=("published", "diverse"),  # drum_core.coreset.CORESET_MODES (not imported here: --help stays torch-free)
            default="published",
            help="published (default): the paper's rule, typical prompts of the dominant theme; diverse: spread over every theme",
        )
        command.add_argument(
            "--half-life-days",
            type=number_in(float, 0),
            default=0.0,
            help="recency: intensity x 0.5^(age/half-life), age in days before the history's newest timestamp; 0 = off (default)",
        )
        command.add_argument("--device", help="cuda, cuda:1, mps, cpu (default: cuda if available, else cpu)")
        command.add_argument("--cache", help="folder for cached history encodings (reused across runs)")
        command.add_argument("--no-progress", action="store_true", help="no progress bars")

    run = commands.add_parser("personalize", help="generate an image personalized by a prompt history")
    model_and_history(run)
    run.add_argument("--prompt", help="the target prompt")
    run.add_argument(
        "--degree",
        "--alpha",  # the paper's name for the degree
        dest="degree",
        type=_degrees,
        default=[defaults.DEGREE],
        help=f"personalization degree (the paper's alpha; --alpha is the same flag) in [0, 1] (default {defaults.DEGREE}); several, comma-separated (0,0.3,0.6), give one image "
        "per degree from the same noise, side by side in --out",
    )
    run.add_argument("--profile", metavar="PATH", help="a profile file (drum profile --save) instead of --history and the coreset options")
    run.add_argument(
        "--relevant", type=number_in(int, 0), default=0, help="use only the M references most similar to the prompt (default 0: all)"
    )
    run.add_argument("--out", default="drum.png", help="output PNG (default drum.png)")
    run.add_argument("--adapters", help="folder holding L/H/bigG/T5.safetensors (default: $DRUM_WEIGHTS, ComfyUI models/drum, hub)")
    run.add_argument("--steps", type=POSITIVE, help="denoising steps (default 30; 2 with --tiny-random; at most the scheduler's)")
    run.add_argument("--guidance", type=number_in(float, 0), help="guidance scale (default: the pipeline's)")
    run.add_argument("--size", type=number_in(int, 8, 8192), help="image height and width in pixels (default: the model's)")
    run.add_argument("--seed", type=SEED, default=0, help="noise seed")
    run.add_argument("--dtype", choices=DTYPE_NAMES, help="model precision (default float16 on GPU, float32 on CPU)")
    run.add_argument("--clip-skip", type=number_in(int, 0), help="diffusers clip_skip (context layer below the default)")
    run.add_argument("--tiny-random", action="store_true", help=f"{TINY_BANNER}: tiny random pipeline and adapters, no downloads")
    run.add_argument("--family", choices=["sd1", "sd2", "sdxl", "sd3", "flux"], help="family of the --tiny-random pipeline (default sd1)")

    profile = commands.add_parser("profile", help="show which history prompts the coreset keeps, with intensities")
    model_and_history(profile)
    profile.add_argument("--json", action="store_true", help="print JSON")
    profile.add_argument("--tiny-random", action="store_true", help=f"{TINY_PROFILE_BANNER}: a tiny random CLIP-L encoder")
    profile.add_argument("--save", metavar="PATH", help="write the profile (prompts, intensities, features, picks) to a .safetensors file")
    profile.add_argument(
        "--load",
        metavar="PATH",
        help="read a profile file instead of --history; with --model its features are re-encoded if another encoder made them",
    )

    check = commands.add_parser("check", help="does it learn my taste? Text align on held-out prompts against a control")
    model_and_history(check)
    check.add_argument("--control", metavar="FILE", help="another person's history as the control (default: your history shuffled)")
    check.add_argument("--out", metavar="PNG", help="write the Target-vs-History plot here")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--held-out", type=number_in(int, 0), default=0, help="newest prompts held out (default 0: 10 %% of the history, 2 to 20)"
    )
    check.add_argument(
        "--degrees", type=_degrees, default=[round(0.1 * i, 1) for i in range(1, 11)], help="degrees to sweep (default 0.1,0.2,...,1)"
    )
    check.add_argument(
        "--max-target-loss",
        type=number_in(float, 0),
        default=0.05,
        help="largest loss of the Target score, a fraction of degree 0's (default 0.05 = 5 %%)",
    )
    check.add_argument(
        "--min-edge", type=number_in(float, 0), default=0.1, help="smallest edge over the control that counts (score points)"
    )
    check.add_argument("--shuffle-seed", type=SEED, default=0, help="seed of the shuffled control")
    check.add_argument("--adapters", help="folder holding L/H/bigG/T5.safetensors (default: $DRUM_WEIGHTS, ComfyUI models/drum, hub)")
    check.add_argument("--dtype", choices=DTYPE_NAMES, help="model precision (default float16 on GPU, float32 on CPU)")
    check.add_argument("--tiny-random", action="store_true", help=f"{TINY_CHECK_BANNER}: tiny random encoders and adapters")
    check.add_argument("--family", choices=["sd1", "sd2", "sdxl", "sd3", "flux"], help="family of the --tiny-random model (default sd1)")

    history = commands.add_parser("history", help="make a history file from images (your ComfyUI outputs)")
    history_commands = history.add_subparsers(dest="history_command", required=True, metavar="{import}")
    imports = history_commands.add_parser(
        "import",
        help="read the prompts of images (ComfyUI, A1111 / Forge / Fooocus metadata) into a CSV history",
        description="Reads the positive prompts recorded in images' metadata (never their pixels) into a CSV that "
        "--history and ComfyUI's History Loader read: one row per prompt per image, oldest first.",
    )
    imports.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="folders (read recursively; linked folders are not entered) or images"
    )
    imports.add_argument("--out", required=True, metavar="FILE.csv", help="the CSV to write (prompt, timestamp[, weight])")
    imports.add_argument("--dedupe", action="store_true", help="identical prompts make one row whose weight is their count")
    imports.add_argument(
        "--since", type=since_time, metavar="DAYS|DATE", help="only images newer than DAYS days ago or than an ISO date (2025-01-31)"
    )

    for name in SUBCOMMANDS:
        commands.add_parser(name, help=f"see `drum {name} --help`", add_help=False)
    return parser


HISTORY_HELP = (
    f"prompt history: {', '.join(HISTORY_EXTENSIONS)} (.txt: one prompt a line, optional TAB rating), "
    "or a folder of images / an image (the prompts in their ComfyUI or A1111 metadata)"
)


def since_time(text: str) -> float:
    """An argparse `type`: DAYS (a number >= 0: that many days before now) or an ISO date / time -> epoch seconds."""
    import time
    from datetime import datetime, timezone

    try:
        days = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of days or an ISO date such as 2025-01-31, got {text!r}") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    if not (math.isfinite(days) and days >= 0):
        raise argparse.ArgumentTypeError(f"days must be a finite number >= 0, got {text}")
    return time.time() - days * 86_400.0


PROFILE_FILE_IDLE = {  # what a profile file (--load, --profile) already holds
    "history": "the profile file holds the prompts",
    **{
        flag: "the profile file holds the coreset's picks"
        for flag in ("ratio", "max_count", "k", "coreset_seed", "coreset_mode", "half_life_days")
    },
}
# (command, mode flag, flag set?) -> {flag: why it does nothing in that mode}; such flags are refused
IDLE_FLAGS = {
    ("personalize", "tiny_random", True): {
        "model": "it builds its own tiny random pipeline",
        "adapters": "it builds its own random adapters",
        "dtype": "the tiny pipeline runs in float32",
    },
    ("personalize", "tiny_random", False): {
        "family": "a --model's family is read off its text encoders; --family picks the --tiny-random one"
    },
    ("profile", "tiny_random", True): {"model": "it builds its own tiny random encoder"},
    ("check", "tiny_random", True): {
        "model": "it builds its own tiny random encoders",
        "adapters": "it builds its own random adapters",
        "dtype": "the tiny encoders run in float32",
    },
    ("check", "tiny_random", False): {"family": "a --model's family is read off its text encoders"},
    ("profile", "load", True): PROFILE_FILE_IDLE,
    ("personalize", "profile", True): PROFILE_FILE_IDLE,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `drum` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from .history import HistoryError
    from .weights import AdapterNotFoundError

    try:
        _refuse_idle_flags(args, given_flags(_subparser(parser, args.command), argv[1:]))
        _prefer_pil_image_processors()
        return {"personalize": personalize, "profile": profile, "check": check, "history": history_import}[args.command](args)
    except KeyboardInterrupt:
        print("\ndrum: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (AdapterNotFoundError, HistoryError, ValueError, OSError) as error:
        command = f"{args.command} {args.history_command}" if args.command == "history" else args.command
        print(f"drum {command}: {one_line(error)}", file=sys.stderr)
        return BAD_INPUT


def one_line(error: BaseException) -> str:
    """The error's message on one line (libraries such as diffusers write several)."""
    return " ".join(str(error).split()) or type(error).__name__


def refuse_idle_flags(given: set[str], names: Iterable[str], why: str) -> None:
    """ValueError naming the flags of `names` (argparse dest names) that were `given` although they do nothing `why`."""
    idle = [f"--{name.replace('_', '-')}" for name in names if name in given]
    if idle:
        raise ValueError(f"{', '.join(idle)} {'does' if len(idle) == 1 else 'do'} nothing {why}")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices[command]


def _refuse_idle_flags(args: argparse.Namespace, given: set[str]) -> None:
    for (command, mode, is_set), idle in IDLE_FLAGS.items():
        if command != args.command or bool(getattr(args, mode)) != is_set:
            continue
        where = f"with --{mode.replace('_', '-')}" if is_set else f"without --{mode.replace('_', '-')}"
        for flag in sorted(given & set(idle)):
            refuse_idle_flags(given, [flag], f"{where} ({idle[flag]})")


def _prefer_pil_image_processors() -> None:
    """Without torchvision, bind transformers' CLIP/SigLIP image processors to their PIL variants up front.

    diffusers imports `CLIPImageProcessor` and `SiglipImageProcessor` (safety checker, IP-adapter loader;
    DrUM uses neither). transformers >= 5 makes those names need torchvision and, when it is not
    installed, falls back to the `...Pil` classes with a warning on every run. Binding the PIL classes
    first is that same fallback, as the warning itself advises, without the noise; with torchvision
    installed, or a transformers without the PIL variants, nothing changes.
    """
    if importlib.util.find_spec("torchvision") is not None or importlib.util.find_spec("transformers") is None:
        return
    import transformers

    variants = {name: getattr(transformers, f"{name}Pil", None) for name in ("CLIPImageProcessor", "SiglipImageProcessor")}
    module = sys.modules["transformers"]  # resolving a class can re-create transformers' lazy module (once torch loads)
    for name, pil_variant in variants.items():
        if pil_variant is not None:
            setattr(module, name, pil_variant)


def _delegate(command: str, argv: list[str]) -> int:
    _prefer_pil_image_processors()
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
def _degrees(text: str) -> list[float]:
    """ "0.3" or "0,0.3,0.6" -> degrees, each in [0, 1]."""
    try:
        degrees = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"degrees must be numbers separated by commas, got {text!r}") from None
    bad = [degree for degree in degrees if not 0.0 <= degree <= 1.0]  # also NaN
    if bad:
        raise argparse.ArgumentTypeError(f"degrees must lie in [0, 1], got {bad[0]:g}")
    return degrees


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
    """The --device asked for (checked: a device torch knows and this machine has), else cuda if available, else cpu."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name}: not a device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: no such CUDA device on this machine ({torch.cuda.device_count()} visible)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    return name


def _model_location(model: str) -> str:
    """Where --model loads from: a path must be a diffusers pipeline folder; anything else is a hub id, checked with
    one request (weights.hub_location: the id, or its cached snapshot folder when the hub cannot be reached)."""
    path = Path(model).expanduser()
    looks_like_path = path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1 or "\\" in model
    if path.exists() or looks_like_path:
        if not path.is_dir():
            raise ValueError(f"--model {model}: no such folder (a diffusers pipeline folder, or a Hugging Face hub id)")
        if not (path / "model_index.json").is_file():
            raise ValueError(f"--model {model}: not a diffusers pipeline folder (no model_index.json)")
        return model
    from .weights import hub_location

    return hub_location(model, "--model")


def _check_steps(steps: int, scheduler) -> None:
    """Denoising steps within what the pipeline's scheduler can schedule (DDIM, PNDM: 999 of 1000)."""
    config = scheduler.config
    most = config.get("num_train_timesteps", 1000) - config.get("steps_offset", 0)
    if steps > most:
        raise ValueError(f"--steps {steps}: this model's scheduler ({type(scheduler).__name__}) takes 1 to {most} steps")


def _check_out(out: str) -> Path:
    path = Path(out)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--out {out}: the image is written as {', '.join(IMAGE_SUFFIXES)} (name the file with one of them)")
    if path.is_dir():
        raise ValueError(f"--out {out}: is a folder; name the image file")
    return path


def history_import(args: argparse.Namespace) -> int:
    """`drum history import`: images -> a CSV history; prints what was read and skipped."""
    from .image_history import describe_skipped, scan_images, write_history_csv

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out {out}: the history is written as CSV; name it FILE.csv")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} not found")
    scan = scan_images(args.sources, since=args.since, dedupe=args.dedupe)
    if not len(scan.history):
        raise ValueError(f"no prompt found in {scan.read} images read ({describe_skipped(scan.skipped)}); {out} not written")
    write_history_csv(scan.history, out, intensities=args.dedupe)
    print(f"{len(scan.history)} prompts from {scan.read} images read ({describe_skipped(scan.skipped)}) -> {out}")
    return 0


def _history(args: argparse.Namespace):
    from . import tiny
    from .history import History, recency_intensities
    from .image_history import load_any_history

    if args.history:
        history = load_any_history(args.history)
    elif args.tiny_random:
        history = History(list(tiny.HISTORY), source="built-in tiny history")
    else:
        raise ValueError(f"--history is required (a {', '.join(HISTORY_EXTENSIONS)} file, .txt: one prompt a line; or a folder of images)")
    return history.with_intensities(recency_intensities(history, args.half_life_days))


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
    for rank, (index, intensity, prompt) in enumerate(zip(profile.indices, profile.intensities, profile.prompts), 1):
        print(f"{rank:>4} {index:>6} {intensity:>9.3g}  {prompt}")


# ---------------------------------------------------------------------------------- commands
def personalize(args: argparse.Namespace) -> int:
    """`drum personalize`: history -> coreset -> PeCA -> pipeline -> PNG."""
    import torch

    from . import tiny
    from .diffusers_pipelines import PipelinePersonalizer
    from .profiles import Profile

    if args.tiny_random:
        print(TINY_BANNER, file=sys.stderr)
    elif not args.model:
        raise ValueError("--model is required (a diffusers folder or hub id), or --tiny-random to verify the install")
    if not args.tiny_random and not args.prompt:
        raise ValueError("--prompt is required")
    out = _check_out(args.out)
    history = None if args.profile else _history(args)
    device = _device(args.device)
    pipe, adapters = _pipeline(args, device)
    if args.tiny_random:
        prompt, steps, size = args.prompt or "a lighthouse on a cliff at dusk", args.steps or 2, args.size or tiny.IMAGE_SIZE
    else:
        prompt, steps, size = args.prompt, args.steps or 30, args.size
    _check_steps(steps, pipe.scheduler)
    bars = _Bars(not args.no_progress)
    try:
        session = PipelinePersonalizer(pipe, adapters, _cache(args), args.clip_skip, bars)
        if args.profile:
            profile = session.set_profile(Profile.load(args.profile))
        else:
            diverse = args.coreset_mode == "diverse"
            profile = session.set_history(history, args.ratio, args.max_count, args.k, args.coreset_seed, diverse)
        kwargs = session.kwargs(prompt, args.degree if len(args.degree) > 1 else args.degree[0], relevant=args.relevant)
    finally:
        bars.close()
    shown = ", ".join(f"{degree:g}" for degree in args.degree)
    print(f"{session.family}: {len(profile.references)} of {profile.total} history prompts as references, degree {shown}", file=sys.stderr)
    if args.guidance is not None:
        kwargs["guidance_scale"] = args.guidance
    if size is not None:
        kwargs["height"] = kwargs["width"] = size
    pipe.set_progress_bar_config(disable=args.no_progress)
    generators = [torch.Generator("cpu").manual_seed(args.seed) for _ in args.degree]  # the same noise per degree
    image = _side_by_side(pipe(**kwargs, num_inference_steps=steps, generator=generators).images)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(f"wrote {out}" + (f" ({TINY_BANNER})" if args.tiny_random else ""))
    return 0


def _pipeline(args: argparse.Namespace, device: str):
    """(pipeline, adapters) for --tiny-random (its --family) or --model (adapters found before the model is loaded)."""
    from . import tiny
    from .adapter_names import ENCODER_ADAPTERS
    from .diffusers_pipelines import folder_encoder_names
    from .personalizer import detect_family
    from .weights import load_adapters

    if args.tiny_random:
        family = args.family or "sd1"
        return tiny.pipeline(family).to(device), {n: a.to(device) for n, a in tiny.adapters(family).items()}
    if not args.model:
        raise ValueError("--model is required (a diffusers folder or hub id), or --tiny-random to verify the install")
    model = _model_location(args.model)
    names = folder_encoder_names(model)  # configs only: fail on weights before loading the model
    detect_family(names)
    adapters = load_adapters([ENCODER_ADAPTERS[n] for n in names], args.adapters, device=device)
    from diffusers import DiffusionPipeline

    dtype = parse_dtype(args.dtype or ("float32" if device == "cpu" else "float16"))
    with warnings.catch_warnings():  # newer diffusers rename torch_dtype to dtype; older ones know only torch_dtype
        warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
        return DiffusionPipeline.from_pretrained(model, torch_dtype=dtype).to(device), adapters


def check(args: argparse.Namespace) -> int:
    """`drum check`: the taste check (drum_core.taste): the table on stdout, the plot in --out."""
    from .diffusers_pipelines import PipelinePersonalizer
    from .image_history import load_any_history
    from .taste import TasteSettings, held_out_count, render_taste, taste_check

    out = _check_out(args.out) if args.out else None
    settings = TasteSettings(
        held_out=args.held_out,
        max_target_loss=args.max_target_loss,
        ratio=args.ratio,
        max_count=args.max_count,
        k=args.k,
        coreset_seed=args.coreset_seed,
        diverse=args.coreset_mode == "diverse",
        shuffle_seed=args.shuffle_seed,
        min_edge=args.min_edge,
    )
    history = _history(args)
    control = load_any_history(args.control) if args.control else None
    held_out_count(len(history), args.held_out)  # a history too short for the check fails before any model is loaded
    if args.tiny_random:
        print(TINY_CHECK_BANNER, file=sys.stderr)
    pipe, adapters = _pipeline(args, _device(args.device))
    bars = _Bars(not args.no_progress and not args.json)
    try:
        session = PipelinePersonalizer(pipe, adapters, _cache(args))
        report = taste_check(
            session.personalizer, history, args.degrees, control, settings, lambda done, total: bars("conditions", done, total)
        )
    finally:
        bars.close()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        render_taste(report).save(out)
        print(f"wrote {out}", file=sys.stderr)
    print(json.dumps(report.as_dict(), ensure_ascii=False, indent=1) if args.json else report.table())
    return 0


def profile(args: argparse.Namespace) -> int:
    """`drum profile`: the prompts coreset sampling keeps, with their intensities."""
    from . import tiny
    from .diffusers_pipelines import SLOTS, folder_encoder_names, profile_history
    from .encoders import HFClipBackend
    from .personalizer import first_clip
    from .profiles import Profile

    if args.tiny_random:
        print(TINY_PROFILE_BANNER, file=sys.stderr)
        tokenizer = tiny.clip_tokenizer()
        encoder = HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH).to(_device(args.device)), tokenizer)
    elif not args.model and not args.load:
        raise ValueError("--model is required (a diffusers folder or hub id): the coreset reads its first CLIP text encoder")
    elif not args.model:
        encoder = None  # a loaded profile is shown as saved
    else:
        import transformers
        from diffusers import DiffusionPipeline

        location = _model_location(args.model)
        names = folder_encoder_names(location)
        slot = names[first_clip(names)]
        index = DiffusionPipeline.load_config(os.fspath(location))
        tokenizer_slot = dict(SLOTS)[slot]
        model = getattr(transformers, index[slot][1]).from_pretrained(location, subfolder=slot).to(_device(args.device))
        tokenizer = getattr(transformers, index[tokenizer_slot][1]).from_pretrained(location, subfolder=tokenizer_slot)
        encoder = HFClipBackend(model, tokenizer)
    if args.save and not args.save.endswith(".safetensors"):
        raise ValueError(f"--save {args.save}: profile files are .safetensors files")
    bars = _Bars(not args.no_progress and not args.json)
    try:
        if args.load:
            result = Profile.load(args.load)
            if encoder is not None:
                result = result.for_encoder(encoder, _cache(args), lambda done, total: bars("encoding profile", done, total))
        else:
            history = _history(args)
            diverse = args.coreset_mode == "diverse"
            result = profile_history(encoder, history, args.ratio, args.max_count, args.k, args.coreset_seed, _cache(args), bars, diverse)
    finally:
        bars.close()
    if args.save:
        result.save(args.save)
        print(f"wrote {args.save}", file=sys.stderr)
    _print_profile(result, args.load or result.history.source, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
