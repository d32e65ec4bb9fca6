"""Train a PeCA adapter by self-reconstruction (docs/method.md §6), on one device or many (`drum train`).

    recipe.py         TrainOptions, initialisation, optimizer groups, lr schedule, what the adapter
                      reconstructs (caption_targets) and the loss; the adapter's size is PeCAConfig.for_encoder
    captions.py       caption sources (.txt, CC3M .tsv, .csv, .parquet, folders), streamed; hash-based validation split
    caption_cache.py  the encoded-caption cache (safetensors shards; resumable, built by several processes)
    data.py           what a run reads: captions encoded on the fly or cache rows, one order per epoch
    distributed.py    this process's place in a torchrun job (DDP over NCCL, gloo on CPUs)
    checkpoints.py    checkpoint.pt: written atomically, resumed only by the run that wrote it
    metrics.py        metrics.csv, TensorBoard, loss.png
    trainer.py        Trainer: one run, from a fresh start or a checkpoint to the exported adapter
    cli.py            the command line (`drum train`, `python -m drum_core.train`, `torchrun -m drum_core.train`)

Published recipe (the defaults): AdamW lr 5e-4, weight decay 0.2 (not on norms, biases or
base_query), betas (0.9, 0.95), eps 1e-8, batch 256, 20 epochs, dropout 0.1, seed 42, and the
release's schedule: optimizer step s (1-based) uses lr * (s + 1) / warmup while s < warmup,
then lr * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2. Weights start as the release
initialises them (Xavier-uniform Linear weights, zero biases).
"""
