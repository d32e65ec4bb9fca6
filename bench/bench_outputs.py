"""A history from a large outputs folder: scan time, the first run's encode cost, the references' memory.

    python bench/bench_outputs.py [--images 1000] [--history 20000] [--distinct 500]

1. Scan: writes `--images` PNGs as ComfyUI's SaveImage does (the API graph in `prompt`, a ~20 KB
   `workflow` chunk beside it) and times scan_images with an empty ScanCache (first scan: the images
   are in the page cache, as right after they were made), then again with the cache saved to its JSON
   file and read back (a re-scan of the unchanged folder: one stat per image); best of 3 each.
   The first scan is also timed with the images dropped from the page cache (posix_fadvise on the
   bench's own files): a folder of older outputs is read from disk. Target: re-scan <= 5 % of the first scan.
2. Encode: a `--history`-record history drawn from `--distinct` prompts (many repeats, as an outputs
   folder is), pooled features through the EmbeddingCache on a tiny random CLIP-L: the encoder runs once
   per DISTINCT prompt (EmbeddingCache.computed), so the cost is that of the distinct prompts alone.
3. Memory (from shapes, float32): the keys/values the adapters cache per reference, 2 x 10 blocks x 77
   tokens x width x 4 bytes per context layer read (SD1: CLIP-L; SDXL: CLIP-L -2, bigG -2 and -1), for
   the default bound on references (DEFAULT_MAX_REFERENCES) and for the paper's unbounded 10 %.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

from PIL import Image
from timing import best_of, print_table

from drum_core import tiny
from drum_core.cache import EmbeddingCache
from drum_core.coreset import DEFAULT_MAX_COUNT, sample_count
from drum_core.encoders import HFClipBackend
from drum_core.image_history import ScanCache, scan_images

SUBJECTS = ("a lighthouse", "a red fox", "a harbour", "a castle", "a forest path", "a neon street", "a portrait", "a cat")
STYLES = ("watercolor", "oil painting", "photo, 35mm", "ink sketch", "low poly", "ukiyo-e")
BLOCKS, CLIP_TOKENS = 10, 77
WIDTHS = {"L": 768, "bigG": 1280}
FAMILY_LAYERS = {"SD1": ("L",), "SDXL": ("L", "bigG", "bigG")}  # context layers whose keys/values are cached


def prompt(i: int) -> str:
    return f"{SUBJECTS[i % len(SUBJECTS)]}, {STYLES[(i // len(SUBJECTS)) % len(STYLES)]}, variation {i}"


def graph(text: str) -> dict:
    """ComfyUI's default SD1.5 API graph with `text` as the positive prompt."""
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 1, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
            | {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_outputs(folder: Path, count: int) -> None:
    """PNGs laid out as SaveImage writes them: signature, IHDR, tEXt `prompt`, tEXt `workflow`, the image data, IEND.

    The pixels (SD1.5's default 512 x 512, noise: compresses like a picture, not like a flat colour) are compressed
    once and reused; only the text chunks differ."""
    buffer = io.BytesIO()
    Image.effect_noise((512, 512), 40).convert("RGB").save(buffer, format="PNG", compress_level=4)
    plain = buffer.getvalue()
    at = plain.index(b"IDAT") - 4
    workflow = json.dumps({"nodes": [{"id": i, "type": "Node", "widgets_values": ["x" * 200]} for i in range(80)]})  # ~20 KB
    for i in range(count):
        texts = png_chunk(b"tEXt", b"prompt\0" + json.dumps(graph(prompt(i % 500))).encode("latin-1"))
        texts += png_chunk(b"tEXt", b"workflow\0" + workflow.encode("latin-1"))
        sub = folder / f"batch{i % 10}"
        sub.mkdir(exist_ok=True)
        (sub / f"ComfyUI_{i:05}_.png").write_bytes(plain[:at] + texts + plain[at:])


def evict(folder: Path) -> None:
    """Drop the bench's own images from the page cache (posix_fadvise DONTNEED), so the next scan reads the disk."""
    for path in folder.rglob("*.png"):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def cpu_time(fn, repeats: int = 3) -> float:
    """Least CPU time (user + system, this process) of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def scan_rows(images: int) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as temporary:
        folder, cache_file = Path(temporary) / "output", Path(temporary) / "scan-cache.json"
        folder.mkdir()
        write_outputs(folder, images)
        scans = []

        def first_scan() -> None:
            cache_file.unlink(missing_ok=True)
            cache = ScanCache(cache_file)
            scans.append(scan_images([folder], cache=cache))
            cache.save()

        def rescan() -> None:
            scans.append(scan_images([folder], cache=ScanCache(cache_file)))

        first_s, again_s = best_of(first_scan, 3, warmup=False), best_of(rescan, 3, warmup=False)
        first_cpu, again_cpu = cpu_time(first_scan), cpu_time(rescan)
        cold_s = math.inf
        for _ in range(3 if hasattr(os, "posix_fadvise") else 0):
            evict(folder)
            start = time.perf_counter()
            first_scan()
            cold_s = min(cold_s, time.perf_counter() - start)
        first = scans[0]
        assert all(scan == first for scan in scans) and len(first.history) == images and not first.skipped
        size = sum(f.stat().st_size for f in folder.rglob("*.png")) / images
    return [
        (f"first scan, {images:,} ComfyUI PNGs ({size / 1024:.0f} KiB each)", f"{first_s * 1e3 / images:.3f} ms / image", ""),
        ("re-scan of the unchanged folder (cache file read back)", f"{again_s * 1e3 / images:.3f} ms / image", ""),
        (
            "first scan, the images out of the page cache (read from disk, as a folder of older outputs)",
            f"{cold_s * 1e3 / images:.3f} ms / image",
            "",
        ),
        ("re-scan / first scan from disk, wall time", f"**{100 * again_s / cold_s:.1f} %**", "<= 5 %"),
        ("re-scan / first scan in the page cache, wall time", f"{100 * again_s / first_s:.1f} %", "<= 5 %"),
        ("re-scan / first scan, CPU time of the process (less sensitive to other jobs)", f"{100 * again_cpu / first_cpu:.1f} %", "<= 5 %"),
    ]


def encode_rows(history: int, distinct: int) -> list[tuple[str, str, str]]:
    tokenizer = tiny.clip_tokenizer()
    backend = HFClipBackend(tiny.clip_text_model(tokenizer, tiny.L_WIDTH), tokenizer)
    unique = [prompt(i) for i in range(distinct)]
    rng = random.Random(0)
    records = unique + [rng.choice(unique) for _ in range(history - distinct)]
    rng.shuffle(records)
    timed = {}
    for name, prompts in (("distinct", unique), ("history", records)):
        cache = EmbeddingCache()
        start = time.perf_counter()
        features = cache.pooled_features(backend, prompts)
        timed[name] = (time.perf_counter() - start, cache.computed, features)
    assert timed["history"][1] == distinct and len(timed["history"][2]) == history
    return [
        (f"encode {distinct:,} distinct prompts (tiny CLIP-L)", f"{timed['distinct'][0]:.2f} s", ""),
        (
            f"encode a {history:,}-record history of those prompts: encoder passes",
            f"{timed['history'][1]:,} ({timed['history'][0]:.2f} s)",
            f"= {distinct:,} distinct",
        ),
    ]


def memory_rows(history: int) -> list[tuple[str, str, str]]:
    def gib(value: float) -> str:
        return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"

    rows = []
    for family, layers in FAMILY_LAYERS.items():
        per_reference = sum(2 * BLOCKS * CLIP_TOKENS * WIDTHS[name] * 4 for name in layers)
        bounded = sample_count(history, 0.1, max_count=DEFAULT_MAX_COUNT)
        unbounded = sample_count(history, 0.1, max_count=0)
        rows.append((f"{family} keys/values per reference ({' + '.join(layers)})", gib(per_reference), "from shapes"))
        rows.append((f"... {history:,} prompts, default bound: {bounded} references", gib(bounded * per_reference), "from shapes"))
        rows.append((f"... {history:,} prompts, paper's 10 % (max_count 0): {unbounded:,} references", gib(unbounded * per_reference), ""))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--history", type=int, default=20_000)
    parser.add_argument("--distinct", type=int, default=500)
    args = parser.parse_args(argv)
    rows = scan_rows(args.images) + encode_rows(args.history, args.distinct) + memory_rows(args.history)
    print(f"python bench/bench_outputs.py on {os.cpu_count()} cores, {sys.platform}\n")
    print_table(("measure", "result", "target"), rows)


if __name__ == "__main__":
    main()
