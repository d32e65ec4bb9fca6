"""PeCA next to the text encoders it follows, on a CUDA GPU (bench/gpu_check.sh runs it).

    python bench/bench_gpu.py [--references 64] [--device cuda] [--adapters L,bigG,T5]

Text encoders at full size with random weights (no download), in float16 as ComfyUI runs them
on a GPU: CLIP-L (12 x 768), OpenCLIP-bigG (32 x 1280), T5-XXL (24 x 4096, 4.8B parameters).
PeCA at the published sizes (L, bigG, T5; random weights) in float32, the nodes' precision.
Prints a markdown table: the encoder on one prompt and on the history's prompts, PeCA cold (the
references' keys/values computed in the call) and warm (reused: a new prompt or degree).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from timing import best_of

from drum_core import PeCA, PeCAConfig

ENCODERS = {  # adapter -> (encoder name, tokens per prompt, builder)
    "L": ("CLIP-L", 77, lambda: _clip(768, 3072, 12, 12)),
    "bigG": ("OpenCLIP-bigG", 77, lambda: _clip(1280, 5120, 32, 20)),
    "T5": ("T5-XXL", 256, lambda: _t5()),
}


def _clip(width: int, ffn: int, layers: int, heads: int) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers, num_attention_heads=heads)
    return CLIPTextModel(config)


def _t5() -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(d_model=4096, d_ff=10240, d_kv=64, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu", vocab_size=32128)
    return T5EncoderModel(config)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Best wall time of fn in milliseconds, the device synchronized around each call."""

    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return best_of(run, repeats=5) * 1000


def encoder_times(build: Callable[[], torch.nn.Module], ids: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """(ms for the first prompt of `ids` [N, T], ms for all N) of a freshly built fp16 encoder, freed afterwards."""
    with torch.device(device):
        encoder = build().to(torch.float16).eval()
    with torch.inference_mode():
        times = timed(lambda: encoder(input_ids=ids[:1]), device), timed(lambda: encoder(input_ids=ids), device)
    if device.type == "cuda":
        del encoder
        torch.cuda.empty_cache()
    return times


def measure(slot: str, references: int, device: torch.device) -> list[str]:
    """One table row: encoder on 1 and on `references` prompts, PeCA cold and warm, adapter size."""
    name, tokens, build = ENCODERS[slot]
    one, history = encoder_times(build, torch.randint(0, 32000, (references, tokens), device=device), device)

    config = PeCAConfig.published(slot)
    torch.manual_seed(0)
    adapter = PeCA(config).to(device).eval()
    e = config.encoder_width
    query = torch.randn(1, config.query_tokens, e, device=device)
    target = torch.randn(1, tokens, e, device=device)
    refs = torch.randn(references, tokens, e, device=device)
    with torch.inference_mode():
        cold = timed(lambda: adapter(query, target, refs, None, 0.3), device)
        state = adapter.encode_references(refs)
        warm = timed(lambda: adapter(query, target, state, None, 0.3), device)
    megabytes = sum(p.numel() for p in adapter.parameters()) * 4 / 1e6
    return [slot, name, f"{one:.1f}", f"{history:.1f}", f"{cold:.1f}", f"{warm:.1f}", f"{megabytes:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=64, help="history prompts / references (64)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--adapters", default=",".join(ENCODERS), help="which rows (L,bigG,T5)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    r = args.references
    header = ["adapter", "text encoder (fp16)", "encoder, 1 prompt ms", f"encoder, {r} prompts ms"]
    header += [f"PeCA cold, {r} refs ms", "PeCA warm ms", "PeCA fp32 MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for slot in args.adapters.split(","):
        print("| " + " | ".join(measure(slot, r, device)) + " |", flush=True)


if __name__ == "__main__":
    main()
