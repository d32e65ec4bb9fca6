"""Train a PeCA adapter by self-reconstruction (method.md §6), on one device or many.

    query      = the frozen encoder's empty-prompt embedding (backend.empty_query())
    key/value  = the caption's own raw token states [T, E]; no references, no alpha
    loss       = mean_t(1 - cos(tokens_t, states_t)) + (1 - cos(pooled, raw EOS state))   (CLIP)
                 mean_t(1 - cos(tokens_t, states_t))                                      (T5)

Published recipe (all flags): AdamW lr 5e-4, weight decay 0.2 (not on norms, biases or
base_query), betas (0.9, 0.95), eps 1e-8, batch 256, 20 epochs, dropout 0.1, seed 42, and the
release's schedule: optimizer step s (1-based) uses lr * (s + 1) / warmup while s < warmup,
then lr * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2. Weights start as the release
initialises them (Xavier-uniform Linear weights, zero biases).

Several processes (torchrun) train with DDP: every process reads the same global batch
order and trains on its slice, with gradient accumulation over micro-batches, so the math
is that of one process with the same global batch. A checkpoint (model, optimizer,
scheduler, RNG states of every process, data position) is written atomically every
`--save-every` steps and on SIGTERM/SIGINT; re-running the same command resumes where it
stopped and continues identically.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_path
from .backend import TextEncoderBackend
from .captions import CaptionCache, CaptionSource, CaptionSplit, batched, build_caption_cache, caption_targets, shuffled
from .peca import PeCA, PeCAConfig

CHECKPOINT_FORMAT = "drum-train-checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"
METRIC_FIELDS = ("step", "epoch", "lr", "loss", "val_loss", "captions_per_s", "elapsed_s")
# options that change the numbers: a checkpoint only resumes a run that agrees on these
RECIPE_OPTIONS = ("batch_size", "epochs", "lr", "weight_decay", "betas", "eps", "warmup_steps", "dropout", "seed", "layers")


@dataclass
class TrainOptions:
    """Everything a training run is configured by (the command-line flags)."""

    out: str
    batch_size: int = 256
    micro_batch: int | None = None  # per-process micro-batch (gradient accumulation); None = whole slice
    epochs: int = 20
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 2500
    dropout: float = 0.1
    seed: int = 42
    layers: int = 10
    shuffle_buffer: int = 100_000  # streamed captions: size of the shuffle buffer
    save_every: int = 1000
    validate_every: int = 1000
    max_steps: int | None = None  # stop (with a checkpoint) after this many optimizer steps in all
    precision: str = "auto"  # "bf16" autocast, "fp32", or "auto" (bf16 on CUDA)
    export: str | None = None  # adapter file; default <out>/<name>.safetensors
    tensorboard: bool = True
    progress: bool = True


# ---------------------------------------------------------------------------------- recipe pieces
def adapter_config(backend_kind: str, width: int, layers: int = 10) -> PeCAConfig:
    """The PeCA sized for an encoder: CLIP d = E, FFN E/4, 78 queries; T5 d = E/4 (encode ratio 4), 256 queries."""
    if backend_kind == "t5":
        inner = width // 4
        if inner % 64:
            raise ValueError(f"a T5 adapter for width {width} would be {inner} wide inside, not a multiple of the 64-wide heads")
        return PeCAConfig("t5", width, inner, inner, layers, 256)
    if width % 64:
        raise ValueError(f"a CLIP adapter for width {width} needs a multiple of the 64-wide heads")
    return PeCAConfig("clip", width, width, width // 4, layers, 78)


def release_init(model: PeCA) -> None:
    """The release's initialisation: Xavier-uniform Linear weights, zero biases, base_query N(0, 0.02)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(model.base_query, std=0.02)


def parameter_groups(model: PeCA, weight_decay: float) -> list[dict]:
    """Weight decay on Linear weights only; norms and biases without; base_query frozen, excluded."""
    model.base_query.requires_grad_(False)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim >= 2 and "norm" not in name else no_decay).append(parameter)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based), the release's cosine_lr."""
    s = step + 1
    if s < warmup:
        return (s + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))


def reconstruction_loss(model: nn.Module, query: torch.Tensor, states: torch.Tensor, eos: torch.Tensor | None) -> torch.Tensor:
    """Per-caption loss [N]: query [1, S, E], states [N, T, E], eos [N, E] (CLIP) or None (T5)."""
    tokens, pooled = model(query, states)
    loss = 1 - F.cosine_similarity(tokens.float(), states.float(), dim=-1).mean(-1)
    if eos is not None:
        loss = loss + 1 - F.cosine_similarity(pooled.float(), eos.float(), dim=-1)
    return loss


# ---------------------------------------------------------------------------------- processes
@dataclass
class Processes:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def start(cls, device: str | None = None) -> Processes:
        """Join the torchrun job if there is one (NCCL on GPUs, gloo on CPUs)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        chosen = torch.device(device)
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", local)
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        return cls(rank, world, chosen)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a small tensor over all processes."""
        if self.distributed:
            values = values.to(self.device)
            torch.distributed.all_reduce(values)
        return values.cpu()

    def gather(self, value: torch.Tensor) -> torch.Tensor:
        """[W, *value.shape]: `value` of every process (same shape everywhere)."""
        if not self.distributed:
            return value.unsqueeze(0)
        local = value.to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local)
        return torch.stack(parts).cpu()

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


# ---------------------------------------------------------------------------------- data
class StreamedCaptions:
    """Captions read from their source every epoch and encoded on the fly."""

    def __init__(self, split: CaptionSplit, backend: TextEncoderBackend, shuffle_buffer: int, seed: int):
        self.split = split
        self.backend = backend
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.train_count = split.train_count()
        self.validation_items: list[str] = split.validation()
        self.kind, self.width = backend.kind, backend.width

    def epoch_order(self, epoch: int) -> Iterator[str]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return shuffled(self.split.train(), self.shuffle_buffer, generator)

    def load(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return caption_targets(self.backend, captions)

    load_validation = load

    def query(self) -> torch.Tensor:
        with torch.no_grad():
            return self.backend.empty_query().float().clone()

    def identity(self) -> dict:
        return {"fingerprint": self.backend.fingerprint, "train_count": self.train_count, "source": self.split.source.describe()}


class CachedCaptions:
    """Captions read from a caption cache, in a full random permutation per epoch."""

    def __init__(self, cache: CaptionCache, seed: int):
        self.cache = cache
        self.seed = seed
        self.train_count = cache.train_count
        self.validation_items = list(range(cache.validation_count))
        self.kind, self.width = cache.kind, cache.width

    def epoch_order(self, epoch: int) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.randperm(self.train_count, generator=generator).tolist())

    def load(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.cache.train_rows(rows)

    def load_validation(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.cache.validation_rows(rows)

    def query(self) -> torch.Tensor:
        return self.cache.query()

    def identity(self) -> dict:
        return {"fingerprint": self.cache.fingerprint, "train_count": self.train_count, "source": self.cache.index["source"]}


Captions = StreamedCaptions | CachedCaptions


# ---------------------------------------------------------------------------------- the trainer
@dataclass
class TrainResult:
    step: int
    total_steps: int
    finished: bool  # False: stopped early (signal or max_steps), checkpoint saved
    adapter_path: str | None  # the exported adapter, when finished
    stop_signal: int | None = None  # SIGTERM / SIGINT that stopped the run


class Trainer:
    """One training run: builds the adapter, resumes from `<out>/checkpoint.pt`, trains, exports."""

    def __init__(self, options: TrainOptions, data: Captions, processes: Processes | None = None):
        self.options = options
        self.data = data
        self.processes = processes or Processes()
        self.device = self.processes.device
        o = options
        if o.batch_size % self.processes.world_size:
            raise ValueError(f"--batch-size {o.batch_size} is not divisible by the {self.processes.world_size} processes")
        self.steps_per_epoch = data.train_count // o.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"only {data.train_count} training captions, fewer than one batch of {o.batch_size}")
        self.total_steps = self.steps_per_epoch * o.epochs
        self.bf16 = o.precision == "bf16" or (o.precision == "auto" and self.device.type == "cuda")
        torch.manual_seed(o.seed)
        self.config = adapter_config(data.kind, data.width, o.layers)
        self.model = PeCA(self.config, dropout=o.dropout)
        release_init(self.model)
        self.model.to(self.device)
        groups = parameter_groups(self.model, o.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, o.warmup_steps, self.total_steps))
        self.network: nn.Module = self.model
        if self.processes.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.query = data.query().to(self.device)
        self.step = 0
        self.stop_signal: int | None = None
        os.makedirs(o.out, exist_ok=True)
        self.checkpoint_path = os.path.join(o.out, CHECKPOINT_NAME)
        self.metrics_path = os.path.join(o.out, "metrics.csv")
        torch.manual_seed(o.seed + self.processes.rank)  # dropout stream of this process
        self.resumed = self._resume()

    # ------------------------------------------------------------------ checkpoints
    def _rng_state(self) -> dict:
        state = {"python": random.getstate(), "torch": self.processes.gather(torch.get_rng_state())}
        if self.device.type == "cuda":
            state["cuda"] = self.processes.gather(torch.cuda.get_rng_state(self.device))
        return state

    def save_checkpoint(self) -> None:
        """Write <out>/checkpoint.pt atomically (rank 0); every process takes part."""
        rng = self._rng_state()
        if self.processes.rank != 0:
            return
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "options": _recipe(self.options),
            "data": self.data.identity(),
            "config": asdict(self.config),
        }
        with atomic_path(self.checkpoint_path) as temporary:
            torch.save(checkpoint, temporary)

    def _resume(self) -> bool:
        if not os.path.isfile(self.checkpoint_path):
            return False
        try:
            checkpoint = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise RuntimeError(f"{self.checkpoint_path}: unreadable checkpoint ({error}); move it away to start over") from error
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise RuntimeError(f"{self.checkpoint_path}: not a DrUM training checkpoint")
        saved, now = checkpoint["options"], _recipe(self.options)
        changed = [f"{k}: {saved.get(k)} -> {now[k]}" for k in now if saved.get(k) != now[k]]
        if changed:
            raise RuntimeError(f"{self.checkpoint_path} belongs to a run with other settings ({'; '.join(changed)}): use another --out")
        if checkpoint["data"]["train_count"] != self.data.train_count:
            raise RuntimeError(
                f"{self.checkpoint_path}: the run had {checkpoint['data']['train_count']} training captions, "
                f"the data now has {self.data.train_count}: use another --out"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.step = checkpoint["step"]
        rng = checkpoint["rng"]
        random.setstate(rng["python"])
        rank = self.processes.rank
        if rng["torch"].shape[0] == self.processes.world_size:
            torch.set_rng_state(rng["torch"][rank])
            if self.device.type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"][rank], self.device)
        elif rank == 0:
            print(
                f"resuming {rng['torch'].shape[0]}-process run on {self.processes.world_size}: dropout draws differ from here on",
                file=sys.stderr,
            )
        return True

    # ------------------------------------------------------------------ steps
    def _stop_requested(self, stop: bool, loss_sum: torch.Tensor) -> tuple[bool, float]:
        """Agree on stopping and sum the loss over processes in one all-reduce."""
        totals = self.processes.sum(torch.stack([loss_sum.detach().float().cpu(), torch.tensor(float(stop))]))
        return bool(totals[1] > 0), float(totals[0]) / self.options.batch_size

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def train_step(self, items: Sequence) -> tuple[torch.Tensor, float]:
        """One optimizer step on a global batch: (this process's loss sum, the lr used)."""
        o, p = self.options, self.processes
        share = o.batch_size // p.world_size
        mine = list(items[p.rank * share : (p.rank + 1) * share])
        micros = list(batched(mine, o.micro_batch or share))
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        for i, micro in enumerate(micros):
            states, eos = self.data.load(micro)
            states = states.to(self.device, non_blocking=True)
            eos = eos.to(self.device, non_blocking=True) if eos is not None else None
            sync = i == len(micros) - 1 or not p.distributed
            with nullcontext() if sync else self.network.no_sync():
                with self._autocast():
                    losses = reconstruction_loss(self.network, self.query, states, eos)
                # DDP averages gradients over W processes: scale so the sum is d(mean over the global batch)
                (losses.sum() * (p.world_size / o.batch_size)).backward()
            loss_sum += losses.detach().sum()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss_sum, lr

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean loss over the validation captions, dropout off (every process takes part)."""
        items = self.data.validation_items
        if not items:
            return None
        p = self.processes
        mine = items[p.rank :: p.world_size]
        self.model.eval()
        total = torch.zeros(())
        for chunk in batched(mine, self.options.micro_batch or 64):
            states, eos = self.data.load_validation(chunk)
            with self._autocast():
                losses = reconstruction_loss(
                    self.model, self.query, states.to(self.device), eos.to(self.device) if eos is not None else None
                )
            total += losses.float().sum().cpu()
        self.model.train()
        return float(p.sum(total)) / len(items)

    # ------------------------------------------------------------------ the loop
    def _install_signal_handlers(self):
        def request_stop(signum, _frame):
            self.stop_signal = signum
            signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread: no handlers
                pass
        return previous

    def run(self) -> TrainResult:
        """Train to the end (or to max_steps / a signal), saving checkpoints; export at the end."""
        o, p = self.options, self.processes
        previous = self._install_signal_handlers()
        log = MetricLog(o.out, self.step, tensorboard=o.tensorboard) if p.rank == 0 else None
        bar = _progress_bar(self.total_steps, self.step, enabled=o.progress and p.rank == 0)
        self.model.train()
        started, done_before = time.time(), self.step
        stopped = o.max_steps is not None and self.step >= o.max_steps
        try:
            while self.step < self.total_steps and not stopped:
                epoch, position = divmod(self.step, self.steps_per_epoch)
                order = self.data.epoch_order(epoch)
                for _ in range(position * o.batch_size):  # skip what this epoch already trained on
                    next(order)
                for items in batched(order, o.batch_size):
                    if len(items) < o.batch_size or self.step >= (epoch + 1) * self.steps_per_epoch:
                        break  # the last, incomplete batch of an epoch is dropped
                    tick = time.time()
                    loss_sum, lr = self.train_step(items)
                    wanted = self.stop_signal is not None or (o.max_steps is not None and self.step >= o.max_steps)
                    stopped, loss = self._stop_requested(wanted, loss_sum)
                    validate = self.step % o.validate_every == 0 or self.step == self.total_steps
                    val_loss = self.validate() if validate else None
                    if log is not None:
                        speed = o.batch_size / max(time.time() - tick, 1e-9)
                        log.write(self.step, epoch, lr, loss, val_loss, speed, time.time() - started)
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                    if stopped or self.step % o.save_every == 0 or self.step == self.total_steps:
                        self.save_checkpoint()
                    if stopped:
                        break
                if not stopped and self.step < (epoch + 1) * self.steps_per_epoch:
                    raise RuntimeError(f"epoch {epoch + 1} ran out of captions at step {self.step}: did the caption source change?")
        finally:
            bar.close()
            if log is not None:
                log.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        finished = self.step >= self.total_steps
        adapter_path = self.export() if finished else None
        if log is not None and finished:
            plot_loss_curve(self.metrics_path, os.path.join(o.out, "loss.png"))
        if p.rank == 0 and self.step > done_before:
            rate = (self.step - done_before) * o.batch_size / max(time.time() - started, 1e-9)
            print(f"step {self.step}/{self.total_steps}, {rate:.1f} captions/s", file=sys.stderr)
        return TrainResult(self.step, self.total_steps, finished, adapter_path, self.stop_signal)

    def export_path(self) -> str:
        return self.options.export or os.path.join(self.options.out, f"{self.config.name or 'adapter'}.safetensors")

    @torch.no_grad()
    def export(self) -> str | None:
        """Write the adapter in the published layout, base_query = the query it was trained with."""
        path = self.export_path()
        if self.processes.rank != 0:
            return path
        adapter = PeCA(self.config)
        adapter.load_state_dict({k: v.detach().float().cpu() for k, v in self.model.state_dict().items()})
        query = self.query.float().cpu()
        adapter.base_query.copy_(adapter.pre_proj(query) if self.config.kind == "t5" else query)
        adapter.save(path)
        return path


def _recipe(options: TrainOptions) -> dict:
    values = asdict(options)
    values["betas"] = list(values["betas"])
    return {k: values[k] for k in RECIPE_OPTIONS}


# ---------------------------------------------------------------------------------- logging
class MetricLog:
    """metrics.csv (rows after `start_step` from an interrupted run are dropped) + optional TensorBoard."""

    def __init__(self, out: str, start_step: int, tensorboard: bool = True):
        self.path = os.path.join(out, "metrics.csv")
        kept = []
        if os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= start_step]
        self.file = open(self.path, "w", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, METRIC_FIELDS)
        self.writer.writeheader()
        self.writer.writerows(kept)
        self.file.flush()
        self.board = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed: metrics go to metrics.csv only", file=sys.stderr)
            else:
                self.board = SummaryWriter(os.path.join(out, "tensorboard"), purge_step=start_step + 1)

    def write(self, step: int, epoch: int, lr: float, loss: float, val_loss: float | None, speed: float, elapsed: float) -> None:
        row = {
            "step": step,
            "epoch": epoch + 1,
            "lr": f"{lr:.6e}",
            "loss": f"{loss:.6f}",
            "val_loss": "" if val_loss is None else f"{val_loss:.6f}",
        }
        row.update(captions_per_s=f"{speed:.1f}", elapsed_s=f"{elapsed:.1f}")
        self.writer.writerow(row)
        self.file.flush()
        if self.board is not None:
            self.board.add_scalar("train/loss", loss, step)
            self.board.add_scalar("train/lr", lr, step)
            self.board.add_scalar("train/captions_per_s", speed, step)
            if val_loss is not None:
                self.board.add_scalar("val/loss", val_loss, step)

    def close(self) -> None:
        self.file.close()
        if self.board is not None:
            self.board.close()


def plot_loss_curve(metrics_path: str, png_path: str) -> None:
    """Training and validation loss against step, from metrics.csv (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label="train", linewidth=1)
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("reconstruction loss (1 - cos)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drum train",
        description="Train a PeCA adapter on captions by self-reconstruction (the published DrUM recipe). "
        "Re-run the same command to resume an interrupted run.",
    )
    parser.add_argument(
        "--encoder",
        help="text encoder: clip-l, openclip-h, openclip-bigg, t5-xxl, tiny-clip, tiny-t5, a transformers path/id, "
        "or open_clip:<model>:<pretrained> (e.g. open_clip:ViT-bigG-14:laion2b_s39b_b160k, open_clip:local-dir:<folder>)",
    )
    parser.add_argument("--encoder-dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="precision of the frozen encoder")
    parser.add_argument(
        "--encoder-layers",
        type=int,
        help="open_clip encoders: use the first N text blocks as the encoder (23 for ViT-H-14 as SD2 / the published H adapter)",
    )
    parser.add_argument("--captions", nargs="+", help="caption files or folders (.txt, CC3M .tsv, .csv, .parquet)")
    parser.add_argument("--format", default="auto", choices=["auto", "text", "tsv", "csv", "parquet"])
    parser.add_argument("--column", help="CSV/Parquet column (default: caption, text, txt or prompt)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, metrics.csv, loss.png, tensorboard/, the adapter")
    parser.add_argument("--export", help="adapter file to write at the end (default <out>/<L|H|bigG|T5|adapter>.safetensors)")
    parser.add_argument("--cache", help="caption cache folder: encode the captions once into it, then train from it")
    parser.add_argument("--cache-only", action="store_true", help="build the --cache and exit")
    parser.add_argument("--cache-dtype", default="float16", choices=["float16", "bfloat16", "float32"])
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
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps in all (checkpoint kept; re-run to go on)")
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available; torchrun: the local GPU)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 autocast on CUDA")
    parser.add_argument("--no-tensorboard", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`drum train ...`: returns the exit status (0 finished, 130/143 stopped by SIGINT/SIGTERM)."""
    args = build_parser().parse_args(argv)
    processes = Processes.start(args.device)
    options = TrainOptions(
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
    try:
        data = _open_data(args, processes)
        if data is None:
            return 0
        result = Trainer(options, data, processes).run()
    finally:
        if processes.distributed:
            torch.distributed.destroy_process_group()
    if processes.rank == 0:
        if result.finished:
            print(f"adapter written to {result.adapter_path}")
        else:
            print(f"stopped at step {result.step}/{result.total_steps}; checkpoint in {options.out}: run the same command to resume")
    if result.stop_signal is not None:
        return 128 + result.stop_signal
    return 0


def _open_data(args: argparse.Namespace, processes: Processes) -> Captions | None:
    """The training data the flags ask for; None after --cache-only."""
    if args.cache and os.path.isfile(os.path.join(args.cache, "index.json")) and not args.encoder:
        return CachedCaptions(CaptionCache(args.cache), args.seed)  # a finished cache needs no encoder
    if not args.encoder or not args.captions:
        raise SystemExit("drum train: --encoder and --captions are required (or --cache with a finished cache)")
    backend = open_encoder(args.encoder, processes.device, args.encoder_dtype, args.encoder_layers)
    split = CaptionSplit(CaptionSource.of(args.captions, args.format, args.column), args.validation_fraction, args.validation_size)
    if not args.cache:
        if args.cache_only:
            raise SystemExit("drum train: --cache-only needs --cache")
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


ENCODERS = {  # name -> transformers repo[:subfolder] of the published adapters' encoders
    "clip-l": "openai/clip-vit-large-patch14",
    "openclip-h": "stabilityai/stable-diffusion-2-1:text_encoder",  # 23 of ViT-H's 24 layers, as the H adapter expects
    "openclip-bigg": "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
    "t5-xxl": "google/t5-v1_1-xxl",
}
OPEN_CLIP_PREFIX = "open_clip:"
_TOKENIZER_FOLDERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2", "text_encoder_3": "tokenizer_3"}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def open_encoder(spec: str, device: torch.device | str = "cpu", dtype: str = "fp32", layers: int | None = None) -> TextEncoderBackend:
    """A TextEncoderBackend for `spec`: a name of ENCODERS, "tiny-clip" (random, for smoke tests),
    a transformers folder / hub id, optionally "<repo>:<subfolder>" for a diffusers text encoder,
    or "open_clip:<model>:<pretrained>" / "open_clip:local-dir:<folder>" / "open_clip:hf-hub:<repo>".
    `layers` (open_clip only) keeps the first N text blocks."""
    from . import encoders

    if spec.startswith(OPEN_CLIP_PREFIX):
        return _open_clip_encoder(spec[len(OPEN_CLIP_PREFIX) :], device, dtype, layers)
    if layers is not None:
        raise SystemExit(f"--encoder-layers applies to open_clip encoders only, not {spec}")
    if spec == "tiny-clip":
        from . import tiny

        tokenizer = tiny.clip_tokenizer()
        return encoders.HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH).to(device), tokenizer)
    import transformers

    location = ENCODERS.get(spec.lower(), spec)
    repo, _, subfolder = location.partition(":")
    if os.path.isdir(repo) and not subfolder and os.path.isdir(os.path.join(repo, "text_encoder")):
        raise SystemExit(f"{repo} is a diffusers pipeline folder: name its text encoder, e.g. {repo}:text_encoder")
    where = {"subfolder": subfolder} if subfolder else {}
    config = transformers.AutoConfig.from_pretrained(repo, **where)
    tokenizer_where = {"subfolder": _TOKENIZER_FOLDERS.get(subfolder, subfolder)} if subfolder else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(repo, **tokenizer_where)
    model_type = getattr(config, "model_type", "")
    if model_type in ("t5", "umt5"):
        model = transformers.T5EncoderModel.from_pretrained(repo, dtype=_DTYPES[dtype], **where)
        return encoders.HFT5Backend(model.to(device), tokenizer)
    if model_type.startswith("clip"):
        model = transformers.CLIPTextModel.from_pretrained(repo, dtype=_DTYPES[dtype], **where)  # training needs no projection
        return encoders.HFClipBackend(model.to(device), tokenizer)
    raise SystemExit(f"{location}: a {model_type or 'unknown'} model; drum train reads CLIP and T5 text encoders")


def _open_clip_encoder(location: str, device: torch.device | str, dtype: str, layers: int | None = None) -> TextEncoderBackend:
    """An open_clip model's text tower: "<model>:<pretrained tag or .safetensors file>", "local-dir:<folder>"
    (open_clip_config.json + .safetensors weights) or "hf-hub:<repo>"; the image tower is dropped."""
    import open_clip

    from . import encoders

    name, pretrained = location, None
    if not location.startswith(("local-dir:", "hf-hub:")):
        name, _, pretrained = location.partition(":")
        if not pretrained:
            raise SystemExit(
                f"{OPEN_CLIP_PREFIX}{location}: name the weights, e.g. {OPEN_CLIP_PREFIX}{name}:<pretrained tag or .safetensors file>"
            )
    pickled = []
    if pretrained and os.path.isfile(pretrained) and not pretrained.endswith(".safetensors"):
        pickled = [pretrained]
    if location.startswith("local-dir:"):
        folder = location.partition(":")[2]
        if os.path.isdir(folder):
            pickled = [f for f in sorted(os.listdir(folder)) if f.endswith((".bin", ".pth", ".pt"))]
    if pickled:
        raise SystemExit(f"{location}: drum reads open_clip weights from .safetensors only, not {', '.join(pickled)}")
    model = open_clip.create_model(name, pretrained=pretrained, precision=dtype, device=device, require_pretrained=True)
    model.visual = None  # only the text tower is used
    # training needs no projection
    return encoders.OpenClipBackend(model, open_clip.get_tokenizer(name), project_pooled=False, layers=layers)


if __name__ == "__main__":
    raise SystemExit(main())
