"""DrUM Conditioner against CLIP Text Encode in a real ComfyUI server; the first run on a history; profile memory.

    python bench/bench_conditioner.py [--pairs 21] [--history 640]

Setup (built locally, nothing downloaded): a tiny SD1.5 checkpoint whose CLIP-L is full size with random
weights (tests/support/tiny_checkpoints.py), a random L adapter in the published layout (10 blocks), a
640-prompt history, the coreset sampler at 10 % (64 references).

1. ComfyUI 0.3.x runs headless (CPU) with this pack, on one workflow holding both a DrUM Conditioner and a
   CLIP Text Encode. One run encodes the history; then the two encode fresh prompts, interleaved (each pair
   the same prompt, the order alternating), each run changing one text only. A time is the prompt's
   execution in the server (execution_start -> execution_success), in which that encoder and its preview
   run and every other node is cached (checked). Prints the medians and the median of the per-pair ratios,
   the floor (CLIP Text Encode plus PeCA's target-side FLOPs at this machine's measured GEMM rate), and the
   DrUM run that follows another workflow (ComfyUI then re-runs the loader, coreset and adapter nodes; the
   history's encodings come from the pack's caches).
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

from bench_peca import matmul_rate, peca_flops  # noqa: E402
from support import server as comfy_server  # noqa: E402
from support.server import ComfyServer  # noqa: E402
from support.test_models import checkpoint  # noqa: E402
from support.tiny_models import tiny_adapter  # noqa: E402
from timing import print_table  # noqa: E402

HISTORY_SIZE = 640
PROMPT_SECONDS = 3600  # the first run encodes the whole history: slow on a busy machine
RATIO = 0.1
PROFILE_SIZE = 10_000
SWITCHES = 5  # runs after another workflow
DRUM_NODE, CLIP_NODE = "5", "7"
PREVIEWS = {DRUM_NODE: "6", CLIP_NODE: "8"}  # the PreviewAny of each encoder
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


def graph(drum_text: str, clip_text: str) -> dict:
    """One workflow with both encoders side by side: the DrUM branch (history loader, coreset, adapters,
    DrUM Conditioner of `drum_text`) and a CLIP Text Encode of `clip_text`, each ending in a PreviewAny.

    Runs that change one text re-execute only that encoder and its preview: ComfyUI keeps the rest
    cached, as when an artist edits the prompt of a loaded workflow.
    """
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "DrUMHistoryLoader", "inputs": {"file": "bench_history.txt", "text": ""}},
        "3": {
            "class_type": "DrUMCoresetSampler",
            "inputs": {"history": ["2", 0], "clip": ["1", 1], "ratio": RATIO, "max_count": 0, "k": 10, "seed": 42},
        },
        "4": {"class_type": "DrUMPeCALoader", "inputs": {"L": "L.safetensors", "H": "none", "bigG": "none", "T5": "none"}},
        DRUM_NODE: {
            "class_type": "DrUMConditioner",
            "inputs": {"clip": ["1", 1], "adapters": ["4", 0], "history": ["3", 0], "text": drum_text, "degree": 0.3},
        },
        PREVIEWS[DRUM_NODE]: {"class_type": "PreviewAny", "inputs": {"source": [DRUM_NODE, 0]}},
        CLIP_NODE: {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": clip_text}},
        PREVIEWS[CLIP_NODE]: {"class_type": "PreviewAny", "inputs": {"source": [CLIP_NODE, 0]}},
    }


def execution_seconds(server: ComfyServer, workflow: dict, executed: set[str] | None = None) -> float:
    """The server's execution time of `workflow` (execution_start -> execution_success), in seconds;
    `executed`: the only nodes that may run, all others must come from ComfyUI's cache."""
    entry = server.run(workflow)
    if entry.status != "success":
        raise RuntimeError(f"bench graph failed: {entry.error or entry.messages}\n{server.log_tail()}")
    if executed is not None:
        cached = {node for kind, data in entry.messages if kind == "execution_cached" for node in data["nodes"]}
        if cached != set(workflow) - executed:
            raise RuntimeError(f"bench: nodes {sorted(set(workflow) - cached)} ran, expected only {sorted(executed)}")
    stamps = {kind: data["timestamp"] for kind, data in entry.messages if "timestamp" in data}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


def server_comparison(base: Path, pairs: int, references: int) -> list[tuple[str, str, str]]:
    """Rows: first run, DrUM Conditioner, CLIP Text Encode, ratio (medians over interleaved pairs), and the
    DrUM Conditioner after another workflow ran (its upstream nodes re-executed, the history cached)."""
    with ComfyServer(base) as server:
        texts = {DRUM_NODE: fresh_prompt(-1), CLIP_NODE: fresh_prompt(-2)}
        first = execution_seconds(server, graph(texts[DRUM_NODE], texts[CLIP_NODE]))

        def encode(node: str, text: str) -> float:
            """Only `node`'s text changes: it and its preview run, the rest is cached."""
            texts[node] = text
            return execution_seconds(server, graph(texts[DRUM_NODE], texts[CLIP_NODE]), executed={node, PREVIEWS[node]})

        drum_times, clip_times, ratios = [], [], []
        for i in range(pairs):
            text = fresh_prompt(i)
            if i % 2:
                clip_time, drum_time = encode(CLIP_NODE, text), encode(DRUM_NODE, text)
            else:
                drum_time, clip_time = encode(DRUM_NODE, text), encode(CLIP_NODE, text)
            drum_times.append(drum_time)
            clip_times.append(clip_time)
            ratios.append(drum_time / clip_time)
        switched = []
        for i in range(SWITCHES):  # another workflow (CLIP Text Encode alone) in between evicts the DrUM branch
            workflow = graph(texts[DRUM_NODE], fresh_prompt(1000 + i))
            execution_seconds(server, {key: workflow[key] for key in ("1", CLIP_NODE, PREVIEWS[CLIP_NODE])})
            texts[DRUM_NODE] = fresh_prompt(2000 + i)
            switched.append(execution_seconds(server, graph(texts[DRUM_NODE], texts[CLIP_NODE])))
    return [
        ("first run (history loader, coreset, references, both encoders)", f"{first:.2f} s", ""),
        ("DrUM Conditioner, new prompt (median)", f"{statistics.median(drum_times) * 1e3:.0f} ms", ""),
        ("CLIP Text Encode, same prompt (median)", f"{statistics.median(clip_times) * 1e3:.0f} ms", ""),
        ("DrUM Conditioner / CLIP Text Encode (median of pairs)", f"**{statistics.median(ratios):.2f}x**", "<= 1.6x"),
        floor_row(statistics.median(clip_times), references),
        (
            "DrUM branch after another workflow ran (loader, coreset, adapters re-run; history cached) / CLIP Text Encode",
            f"{statistics.median(switched) / statistics.median(clip_times):.2f}x",
            "",
        ),
    ]


def floor_row(clip_seconds: float, references: int) -> tuple[str, str, str]:
    """The conditioner's floor: CLIP Text Encode's own time plus PeCA's target side (references cached,
    one 77-token prompt) at this machine's measured GEMM rate, over CLIP Text Encode."""
    from drum_core import PeCAConfig

    flops = peca_flops(PeCAConfig.published("L"), 1, references, cached_references=True)
    seconds = flops / matmul_rate()
    return (
        f"floor: CLIP Text Encode + PeCA target side at the GEMM rate ({flops / 1e9:.1f} GFLOP, {seconds * 1e3:.0f} ms) / CLIP Text Encode",
        f"{(clip_seconds + seconds) / clip_seconds:.2f}x",
        "",
    )


def history_encode(prompts: list[str], adapter_path: Path) -> tuple[list[tuple[str, str, str]], dict]:
    """Rows for the first run on the history vs ComfyUI's own encode (in this process); the objects for the memory rows."""
    import torch
    from support import comfy_env

    comfy_env.load_pack()
    import comfy.sd

    from drum_core.history import History
    from drum_core.peca import PeCA
    from drum_core.personalizer import Personalizer, first_clip

    coreset, clip_bridge, io_types, state_module = (
        sys.modules[f"{comfy_env.PACKAGE}.nodes.{name}"] for name in ("coreset", "clip_bridge", "io_types", "state")
    )
    state = state_module.DrumState()  # the bench's own pack state (nodes/state.py)

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
        state.clear()  # empty: the first run
        start = time.perf_counter()
        picked = coreset.sample(state, history, clip, RATIO, 0, 10, 42)  # features of all prompts (+ their states, same pass)
        encoders = clip_bridge.open_clip(state, clip).encoders
        personalizer = Personalizer("sd1", encoders, {"l": adapter}, state.embeddings)
        personalizer.set_history(picked.history.prompts, picked.history.intensities)  # the references' states and keys/values
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
    return rows, {"personalizer": personalizer, "features": state.embeddings.pooled_features(encoder, prompts)}


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
        rows = server_comparison(base, args.pairs, max(1, round(RATIO * len(prompts))))
        encode_rows, objects = history_encode(prompts, adapter_path)
        rows += encode_rows + memory_rows(objects)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(("measure", "result", "target"), rows)


if __name__ == "__main__":
    main()
