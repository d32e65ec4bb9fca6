"""One training run (the Trainer): builds the adapter, resumes from its checkpoint, trains, exports.

Several processes (torchrun) train with DDP: every process reads the same global batch order
and trains on its slice, with gradient accumulation over micro-batches, so the math is that
of one process with the same global batch. A checkpoint is written every `save_every` steps,
at the end and on SIGTERM/SIGINT; re-running the same command resumes where it stopped and
continues identically. Every run that trained a step ends with the adapter exported in the
published layout and the loss plot, also when it stopped early (max_steps or a signal).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..dtypes import dtype_name
from ..peca import PeCA, PeCAConfig
from .captions import batched
from .checkpoints import CHECKPOINT_NAME, read_checkpoint, restore_rng_state, rng_state, write_checkpoint
from .data import Captions
from .distributed import Processes
from .metrics import LOSS_PLOT_NAME, METRICS_NAME, MetricLog, plot_loss_curve
from .recipe import TrainOptions, lr_factor, parameter_groups, recipe_values, reconstruction_loss, release_init


@dataclass
class TrainResult:
    step: int
    total_steps: int
    finished: bool  # False: stopped early (signal or max_steps), checkpoint saved: re-run to go on
    adapter_path: str | None  # the exported adapter (also after an early stop); None when no step was trained
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
        self.bf16 = self.device.type == "cuda" if o.precision == "auto" else dtype_name(o.precision) == "bfloat16"
        torch.manual_seed(o.seed)
        self.config = PeCAConfig.for_encoder(data.kind, data.width, o.layers)
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
        self.metrics_path = os.path.join(o.out, METRICS_NAME)
        torch.manual_seed(o.seed + self.processes.rank)  # dropout stream of this process
        self.resumed = self._resume()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Write <out>/checkpoint.pt atomically (rank 0); every process takes part."""
        rng = rng_state(self.processes)
        if self.processes.rank != 0:
            return
        checkpoint = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "options": recipe_values(self.options),
            "data": self.data.identity(),
            "config": asdict(self.config),
        }
        write_checkpoint(self.checkpoint_path, checkpoint)

    def _resume(self) -> bool:
        checkpoint = read_checkpoint(self.checkpoint_path, recipe_values(self.options), self.data.train_count)
        if checkpoint is None:
            return False
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.step = checkpoint["step"]
        restore_rng_state(checkpoint["rng"], self.processes)
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
        """Train to the end (or to max_steps / a signal), saving checkpoints; then export the adapter and plot the loss."""
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
        # an early stop (max_steps, a signal) exports too: the adapter as trained so far and its loss plot
        adapter_path = self.export() if self.step > 0 else None
        if log is not None and self.step > 0:
            plot_loss_curve(self.metrics_path, os.path.join(o.out, LOSS_PLOT_NAME))
        if p.rank == 0 and self.step > done_before:
            rate = (self.step - done_before) * o.batch_size / max(time.time() - started, 1e-9)
            print(f"step {self.step}/{self.total_steps}, {rate:.1f} captions/s", file=sys.stderr)
        return TrainResult(self.step, self.total_steps, self.step >= self.total_steps, adapter_path, self.stop_signal)

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


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
