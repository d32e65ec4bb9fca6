"""DrUM Conditioner against CLIP Text Encode in a real ComfyUI server; the first run on a history; profile memory.

    python bench/bench_conditioner.py [--pairs 21] [--history 640]

Setup (built locally, nothing downloaded): a tiny SD1.5 checkpoint whose CLIP-L is full size with random
weights (tests/support/tiny_checkpoints.py), a random L adapter in the published layout (10 blocks), a
640-prompt history, the coreset sampler at 10 % (64 references).

1. ComfyUI 0.3.x runs headless (CPU) with this pack. One run encodes the history; then DrUM Conditioner
   and CLIP Text Encode encode fresh prompts, interleaved (each pair the same prompt, the order
   alternating). A time is the prompt's execution in the server (execution_start -> execution_success);
   every other node of the graph is cached. Prints the medians and the median of the per-pair ratios.
2. History encode, first run: the coreset's features and the references' states (the nodes' own code,
   empty caches) against ComfyUI's own text encode of the same 640 prompts (what CLIP Text Encode runs),
   in this process, the ComfyUI half split around ours.
3. Memory of a profile: features + reference states + the adapter's cached keys/values, measured on
   this history and computed from the shapes for 10,000 prompts.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test support package: ComfyUI server, tiny models

from support import server as comfy_server  # noqa: E402
from support.server import ComfyServer  # noqa: E402
from support.test_models import checkpoint  # noqa: E402
from support.tiny_models import tiny_adapter  # noqa: E402
from timing import print_table  # noqa: E402

HISTORY_SIZE = 640
PROMPT_SECONDS = 3600  # the first run encodes the whole history: slow on a busy machine
RATIO = 0.1
PROFILE_SIZE = 10_000
SUBJECTS = ["a lighthouse", "a red fox", "an old castle", "a tabby cat", "a mountain lake", "a city street", "a sailing ship", "a forest"]
STYLES = ["watercolor", "oil painting", "pencil sketch", "35mm photo", "ukiyo-e print", "pixel art", "charcoal drawing", "3d render"]
MOODS = ["at dusk", "in the rain", "under snow", "at noon", "in fog", "at night", "in spring", "by candlelight"]
EXTRAS = ["soft light", "high detail", "wide angle", "muted colors", "dramatic shadows", "pastel tones", "golden hour", "long exposure"]


def history_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` distinct prompts of 8-20 words, like a user's history."""
    rng = random.Random(seed)
    prompts = []
    for i in range(count):
        extras = ", ".join(rng.sample(EXTRAS, rng.randint(1, 3)))
        prompts.append(f"{rng.choice(SUBJECTS)} {rng.choice(MOODS)}, {rng.choice(STYLES)}, {extras}, study {i}")
    return prompts


def fresh_prompt(i: int) -> str:
    """A prompt no earlier run has seen."""
    rng = random.Random(10_000 + i)
    return f"{rng.choice(SUBJECTS)} near {rng.choice(SUBJECTS)} {rng.choice(MOODS)}, {rng.choice(STYLES)}, variation {i}"


def graphs(text: str) -> tuple[dict, dict]:
    """(DrUM graph, CLIP Text Encode graph) for `text`, both ending in a PreviewAny output."""
    loader = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}}
    drum = {
        "1": loader,
        "2": {"class_type": "DrUMHistoryLoader", "inputs": {"file": "bench_history.txt", "text": ""}},
        "3": {
            "class_type": "DrUMCoresetSampler",
            "inputs": {"history": ["2", 0], "clip": ["1", 1], "ratio": RATIO, "max_count": 0, "k": 10, "seed": 42},
        },
        "4": {"class_type": "DrUMPeCALoader", "inputs": {"L": "L.safetensors", "H": "none", "bigG": "none", "T5": "none"}},
        "5": {
            "class_type": "DrUMConditioner",
            "inputs": {"clip": ["1", 1], "adapters": ["4", 0], "history": ["3", 0], "text": text, "degree": 0.3},
        },
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }
    clip = {
        "1": loader,
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }
    return drum, clip


def execution_seconds(server: ComfyServer, graph: dict) -> float:
    """The server's execution time of `graph` (execution_start -> execution_success), in seconds."""
    entry = server.run(graph)
    if entry.status != "success":
        raise RuntimeError(f"bench graph failed: {entry.error or entry.messages}\n{server.log_tail()}")
    stamps = {kind: data["timestamp"] for kind, data in entry.messages if "timestamp" in data}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


def server_comparison(base: Path, pairs: int) -> list[tuple[str, str, str]]:
    """Rows: first run, DrUM Conditioner, CLIP Text Encode, ratio (medians over interleaved pairs)."""
    with ComfyServer(base) as server:
        first = execution_seconds(server, graphs(fresh_prompt(-1))[0])
        execution_seconds(server, graphs(fresh_prompt(-2))[1])  # CLIP Text Encode's first run (warm-up)
        drum_times, clip_times, ratios = [], [], []
        for i in range(pairs):
            drum, clip = graphs(fresh_prompt(i))
            if i % 2:
                clip_time, drum_time = execution_seconds(server, clip), execution_seconds(server, drum)
            else:
                drum_time, clip_time = execution_seconds(server, drum), execution_seconds(server, clip)
            drum_times.append(drum_time)
            clip_times.append(clip_time)
            ratios.append(drum_time / clip_time)
    return [
        ("first run (history loader, coreset, references, conditioner)", f"{first:.2f} s", ""),
        ("DrUM Conditioner, new prompt (median)", f"{statistics.median(drum_times) * 1e3:.0f} ms", ""),
        ("CLIP Text Encode, same prompt (median)", f"{statistics.median(clip_times) * 1e3:.0f} ms", ""),
        ("DrUM Conditioner / CLIP Text Encode (median of pairs)", f"**{statistics.median(ratios):.2f}x**", "<= 1.6x"),
    ]


def history_encode(prompts: list[str], adapter_path: Path) -> tuple[list[tuple[str, str, str]], dict]:
    """Rows for the first run on the history vs ComfyUI's own encode (in this process); the objects for the memory rows."""
    import torch
    from support import comfy_env

    comfy_env.load_pack()
    import comfy.sd

    from drum_core.cache import EmbeddingCache
    from drum_core.history import History
    from drum_core.peca import PeCA
    from drum_core.personalizer import Personalizer, first_clip

    caches, coreset, clip_bridge, io_types = (
        sys.modules[f"{comfy_env.PACKAGE}.nodes.{name}"] for name in ("caches", "coreset", "clip_bridge", "io_types")
    )

    clip = comfy.sd.load_checkpoint_guess_config(str(checkpoint("sd15")), output_vae=False, output_clipvision=False)[1]
    adapter = PeCA.from_file(adapter_path)
    history = io_types.DrumHistory(History(list(prompts)))
    torch.set_grad_enabled(False)
    clip.encode_from_tokens_scheduled(clip.tokenize("warm-up"))

    def comfy_encode(part: list[str]) -> float:
        start = time.perf_counter()
        for prompt in part:
            clip.encode_from_tokens_scheduled(clip.tokenize(prompt))  # what CLIP Text Encode runs
        return time.perf_counter() - start

    def ours() -> tuple[float, Personalizer]:
        caches.EMBEDDINGS = EmbeddingCache()  # empty: the first run
        start = time.perf_counter()
        picked = coreset.sample(history, clip, RATIO, 0, 10, 42)  # features of all prompts (+ their states, same pass)
        encoders = clip_bridge.sub_encoders(clip)
        personalizer = Personalizer("sd1", encoders, {"l": adapter}, caches.EMBEDDINGS)
        personalizer.set_history(picked.history.prompts, picked.history.weights)  # the references' states and keys/values
        return time.perf_counter() - start, personalizer

    half = len(prompts) // 2
    comfy_seconds = comfy_encode(prompts[:half])
    our_seconds, personalizer = ours()
    comfy_seconds += comfy_encode(prompts[half:])
    encoder = personalizer.encoders[first_clip(personalizer.encoders)]
    rows = [
        (f"ComfyUI text encode of the {len(prompts)} history prompts", f"{comfy_seconds:.2f} s", ""),
        (
            f"first run: coreset features of {len(prompts)} + states and keys/values of the {len(personalizer.references)} references",
            f"{our_seconds:.2f} s",
            "",
        ),
        ("first run / ComfyUI text encode", f"**{our_seconds / comfy_seconds:.2f}x**", "<= 1.1x"),
    ]
    return rows, {"personalizer": personalizer, "features": caches.EMBEDDINGS.pooled_features(encoder, prompts)}


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one buffer count once)."""
    seen = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def memory_rows(objects: dict) -> list[tuple[str, str, str]]:
    """Measured on this profile, and computed from the shapes for 10,000 prompts."""
    personalizer, features = objects["personalizer"], objects["features"]
    references = len(personalizer.references)
    states = [state for state in personalizer._reference_states.values()]
    key_values = storage_bytes([t for state in states for t in state.keys + state.values])
    tokens, width = states[0].tokens, features.shape[1]
    blocks = len(states[0].keys)
    reference_states = references * tokens * width * 4 * len(states)  # float32 states the keys/values come from
    formula_kv = 2 * blocks * references * tokens * width * 4 * len(states)
    assert key_values == formula_kv, (key_values, formula_kv)
    picks = round(RATIO * PROFILE_SIZE)
    big = {
        "features": PROFILE_SIZE * width * 4,
        "states": picks * tokens * width * 4,
        "kv": 2 * blocks * picks * tokens * width * 4,
        "cache": PROFILE_SIZE * tokens * width * 4,
    }

    def mib(value: float) -> str:
        if value < 2**20:
            return f"{value / 2**10:,.0f} KiB"
        return f"{value / 2**20:,.0f} MiB" if value < 2**30 else f"{value / 2**30:.2f} GiB"

    return [
        (f"profile of {len(features)} prompts, {references} references (SD1, L): features", mib(features.numel() * 4), "measured"),
        ("... reference states / keys+values cached by the adapter", f"{mib(reference_states)} / {mib(key_values)}", "measured"),
        (f"profile of {PROFILE_SIZE:,} prompts, {picks:,} references (SD1, L): features", mib(big["features"]), "from shapes"),
        ("... reference states / keys+values cached by the adapter", f"{mib(big['states'])} / {mib(big['kv'])}", "from shapes"),
        ("... states of every prompt kept by the embedding cache (LRU, 2 GiB default)", mib(big["cache"]), "from shapes"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=21, help="interleaved DrUM / CLIP Text Encode pairs")
    parser.add_argument("--history", type=int, default=HISTORY_SIZE, help="history prompts (a smaller one only checks the bench)")
    args = parser.parse_args()
    comfy_server.PROMPT_SECONDS = PROMPT_SECONDS
    work = Path(tempfile.mkdtemp(prefix="drum-bench-"))
    try:
        base = work / "base"
        (base / "models" / "checkpoints").mkdir(parents=True)
        (base / "models" / "checkpoints" / "tiny_sd15.safetensors").symlink_to(checkpoint("sd15"))
        (base / "models" / "drum").mkdir()
        adapter_path = base / "models" / "drum" / "L.safetensors"
        tiny_adapter("L", seed=0, layers=10).save(adapter_path)  # the published L layout, random weights
        (base / "input").mkdir()
        prompts = history_prompts(args.history)
        (base / "input" / "bench_history.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
        rows = server_comparison(base, args.pairs)
        encode_rows, objects = history_encode(prompts, adapter_path)
        rows += encode_rows + memory_rows(objects)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(("measure", "result", "target"), rows)


if __name__ == "__main__":
    main()
