"""Adapter training throughput with and without the caption cache, on a small CPU model.

    python bench/bench_train.py

Trains a 4-block PeCA on a random 4-layer, 256-wide CLIP text encoder (CPU, fp32) for a few
steps of batch 32: once encoding every caption on the fly, once from a caption cache built
beforehand, and prints captions/s as a markdown table. On real encoders the gap grows with
the encoder: its forward pass costs about as much as the adapter's training step for CLIP-L,
about 3x for bigG and about 20x for T5-XXL (see the FLOP estimate in docs/training.md).
"""

from __future__ import annotations

import csv
import random
import tempfile
import time
from pathlib import Path

import torch

from drum_core import tiny
from drum_core.encoders import HFClipBackend
from drum_core.train.caption_cache import build_caption_cache
from drum_core.train.captions import CaptionSource, CaptionSplit
from drum_core.train.data import CachedCaptions, StreamedCaptions
from drum_core.train.metrics import METRICS_NAME
from drum_core.train.recipe import TrainOptions
from drum_core.train.trainer import Trainer

WIDTH = 256
CAPTIONS = 1024
BATCH = 32
STEPS = 12
WORDS = "a an the red blue old small cat dog fox owl house tree river city boat painting photo of in at night snowy forest".split()


def encoder() -> HFClipBackend:
    """A random CLIP text encoder: 4 layers, 256 wide (about 3M parameters), 77 tokens."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny.clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=WIDTH,
        intermediate_size=4 * WIDTH,
        num_hidden_layers=4,
        num_attention_heads=WIDTH // 64,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return HFClipBackend(CLIPTextModel(config).eval(), tokenizer)


def timed_run(data, out: Path) -> float:
    """captions/s of STEPS optimizer steps (after one warm-up step), from the per-step speed in metrics.csv:
    reading and encoding the batch, forward, backward, optimizer step; not the checkpoint, export or loss plot."""
    options = dict(out=str(out), batch_size=BATCH, epochs=1, layers=4, validate_every=10**9, tensorboard=False, progress=False)
    Trainer(TrainOptions(**options, max_steps=1), data).run()  # warm-up; the timed run resumes from it
    Trainer(TrainOptions(**options, max_steps=1 + STEPS), data).run()
    with open(out / METRICS_NAME, newline="", encoding="utf-8") as f:
        timed = [row for row in csv.DictReader(f) if int(row["step"]) > 1]
    return STEPS * BATCH / sum(BATCH / float(row["captions_per_s"]) for row in timed)


def main() -> None:
    rng = random.Random(0)
    backend = encoder()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "captions.txt").write_text("\n".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 20))) for _ in range(CAPTIONS)))
        split = CaptionSplit(CaptionSource.of(folder / "captions.txt"), validation_fraction=0.0, validation_size=0)
        streamed = timed_run(StreamedCaptions(split, backend, shuffle_buffer=10_000, seed=42), folder / "streamed")
        start = time.perf_counter()
        cache = build_caption_cache(folder / "cache", split, backend, shard_rows=256, dtype="float16")
        build = cache.train_count / (time.perf_counter() - start)
        cached = timed_run(CachedCaptions(cache, seed=42), folder / "cached")
    print(f"PeCA 4 blocks, width {WIDTH}, batch {BATCH}, CPU fp32, {torch.get_num_threads()} threads\n")
    print("| run | captions/s |")
    print("|---|---:|")
    print(f"| training, encoder on the fly | {streamed:.0f} |")
    print(f"| building the caption cache (float16) | {build:.0f} |")
    print(f"| training from the caption cache | {cached:.0f} |")
    print(f"| speed-up from the cache | {cached / streamed:.2f}x |")


if __name__ == "__main__":
    main()
