"""What a run reports: <out>/metrics.csv, TensorBoard scalars (optional) and the loss plot <out>/loss.png."""

from __future__ import annotations

import csv
import os
import sys

METRICS_NAME = "metrics.csv"
LOSS_PLOT_NAME = "loss.png"
METRIC_FIELDS = ("step", "epoch", "lr", "loss", "val_loss", "captions_per_s", "elapsed_s")


class MetricLog:
    """metrics.csv (rows after `start_step` from an interrupted run are dropped) + optional TensorBoard."""

    def __init__(self, out: str, start_step: int, tensorboard: bool = True):
        self.path = os.path.join(out, METRICS_NAME)
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
