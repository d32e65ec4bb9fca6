"""PeCA and coreset performance, measured side by side in one run.

    python bench/bench_peca.py

Prints a markdown table: PeCA (CLIP-L, 64 references) vs the naive materialized-score
computation and vs the FLOP floor from this machine's measured matmul rate, cold and with the
references' keys/values cached (a new target); PeCA while another process keeps one core busy
(pinned to it, and unpinned) vs idle, where PeCA picks its thread count by measuring (drum_core/threads.py); a 5-value alpha sweep vs one run; coreset 100,000 x 768 -> 256 picks.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch
from timing import best_of, median_of, print_table

from drum_core import PeCA, PeCAConfig, coreset_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test support package
from support.contention import spinning_process  # noqa: E402

REFERENCES = 64
TOKENS = 77


def matmul_rate() -> float:
    """float32 FLOP/s of this machine on a GEMM shaped like PeCA's key/value projections."""
    a = torch.randn(REFERENCES * TOKENS, 768)
    b = torch.randn(768, 768)
    seconds = best_of(lambda: a @ b, repeats=10)
    return 2 * a.shape[0] * 768 * 768 / seconds


def peca_flops(config: PeCAConfig, batch: int, refs: int, cached_references: bool = False) -> float:
    """Multiply-add FLOPs of one forward with `refs` references (projections, attention, FFN);
    `cached_references`: the references' keys/values are given and so is block 0's reference attention
    (its query is the constant empty prompt): only what depends on the target runs."""
    d, f, s, t = config.width, config.ffn_width, config.query_tokens, TOKENS
    projected = batch if cached_references else batch + refs
    per_block = (
        2 * batch * s * d * d * 2  # query + output projections
        + 2 * projected * t * d * d * 2  # keys + values of the target (and the references)
        + 2 * batch * s * (1 + refs) * t * d * 2  # scores + weighted values
        + 2 * batch * s * d * f * 2  # feed-forward
    )
    first_block_constant = 2 * s * d * d + 2 * s * refs * t * d * 2  # block 0: query projection + reference attention
    return per_block * config.layers - (first_block_constant if cached_references else 0)


def under_contention(fn, pinned: bool) -> float:
    """median_of(fn) while another process spins on one core (pinned to this process's first CPU, or left to the scheduler)."""
    with spinning_process(min(os.sched_getaffinity(0)) if pinned else None):
        return median_of(fn)


def naive_forward(model: PeCA, query, target, references, intensities, degree, release_style: bool = False):
    """Equation 2 the direct way: concatenate [target | refs], materialize [B, h, S, T(1+R)]
    scores, softmax each segment, weight, multiply by the values. `release_style` adds what the
    release's attention does on top: split, separate normalizations, concatenation, a final
    renormalization (same numbers)."""
    b = target.shape[0]
    r = references.shape[0]
    shares = torch.cat([torch.tensor([1 - degree]), degree * intensities / intensities.sum()])  # [1 + R]
    context = torch.cat([target, references.unsqueeze(0).expand(b, -1, -1, -1).reshape(b, r * TOKENS, -1)], 1)
    x = query.expand(b, -1, -1)
    for block in model.tf:
        attn = block.attn
        q, k, v = attn.split_heads(attn.query(x)), attn.split_heads(attn.key(context)), attn.split_heads(attn.value(context))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, h, S, T(1+R)]
        if release_style:
            target_part, ref_part = scores.split([TOKENS, r * TOKENS], dim=-1)
            ref_part = ref_part.unflatten(-1, (r, TOKENS)).softmax(-1) * (intensities / intensities.sum()).view(1, 1, 1, -1, 1)
            ref_part = ref_part.flatten(-2)
            ref_part = degree * ref_part / (ref_part.sum(-1, keepdim=True) + 1e-12)
            probs = torch.cat([target_part.softmax(-1) * (1 - degree), ref_part], -1)
            probs = probs / (probs.sum(-1, keepdim=True) + 1e-12)
        else:
            probs = (scores.unflatten(-1, (1 + r, TOKENS)).softmax(-1) * shares.view(1, 1, 1, -1, 1)).flatten(-2)
        out = probs @ v
        a = attn.proj(out.transpose(1, 2).reshape(x.shape))
        x = block.norm1(x + a)
        x = block.norm2(x + block.ff(x))
    return x[:, :-1], x[:, -1]


def main() -> None:
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    config = PeCAConfig.published("L")
    model = PeCA(config).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    query = torch.randn(1, 78, 768)
    target = torch.randn(1, TOKENS, 768)
    references = torch.randn(REFERENCES, TOKENS, 768)
    intensities = torch.rand(REFERENCES) + 0.5
    degree = 0.3

    ours = best_of(lambda: model(query, target, references, intensities, degree))
    naive = best_of(lambda: naive_forward(model, query, target, references, intensities, degree))
    naive_release = best_of(lambda: naive_forward(model, query, target, references, intensities, degree, release_style=True))
    state = model.encode_references(references)
    warm = best_of(lambda: model(query, target, state, intensities, degree))
    expected = model(query, target, references, intensities, degree)[0]
    for release_style in (False, True):  # all three compute the same numbers
        naive_tokens = naive_forward(model, query, target, references, intensities, degree, release_style)[0]
        torch.testing.assert_close(naive_tokens, expected, atol=2e-4, rtol=1e-4)
    rate = matmul_rate()
    floor = peca_flops(config, 1, REFERENCES) / rate
    warm_floor = peca_flops(config, 1, REFERENCES, cached_references=True) / rate

    def cold_run():
        model(query, target, references, intensities, degree)

    def new_target():
        model(query, target, state, intensities, degree)

    idle = median_of(cold_run)
    pinned = under_contention(cold_run, pinned=True)
    unpinned = under_contention(cold_run, pinned=False)
    warm_idle = median_of(new_target)
    warm_pinned = under_contention(new_target, pinned=True)
    degrees = [0.0, 0.25, 0.5, 0.75, 1.0]

    def sweep():
        state = model.encode_references(references)
        model(query, target.expand(len(degrees), -1, -1), state, intensities, degrees)

    sweep_time = best_of(sweep)
    embeddings = torch.randn(100_000, 768)
    coreset_time = best_of(lambda: coreset_sample(embeddings, n=256), repeats=2)

    rows = [
        (
            "PeCA CLIP-L, 64 refs: naive materialized scores, release-style / ours",
            f"{naive_release / ours:.2f}x",
            ">= 1.15x",
            f"ours {ours * 1e3:.0f} ms, naive {naive_release * 1e3:.0f} ms",
        ),
        (
            "PeCA CLIP-L, 64 refs: naive materialized scores, minimal (one softmax call) / ours",
            f"{naive / ours:.2f}x",
            "(>= 1.15x)",
            f"naive {naive * 1e3:.0f} ms",
        ),
        (
            "PeCA CLIP-L, 64 refs, reference state reused (new target or alpha): naive / ours",
            f"{naive / warm:.2f}x",
            "",
            f"ours {warm * 1e3:.0f} ms",
        ),
        ("PeCA CLIP-L, 64 refs: FLOP floor / ours", f"{floor / ours:.0%}", ">= 60%", f"matmul rate {rate / 1e9:.0f} GFLOP/s"),
        (
            "PeCA CLIP-L, 64 refs, reference state reused: FLOP floor / ours",
            f"{warm_floor / warm:.0%}",
            ">= 50%",
            f"floor {warm_floor * 1e3:.0f} ms ({peca_flops(config, 1, REFERENCES, True) / 1e9:.1f} GFLOP), ours {warm * 1e3:.0f} ms",
        ),
        (
            "PeCA CLIP-L, 64 refs, one core taken by a busy process pinned to it / idle",
            f"{pinned / idle:.2f}x",
            "<= 2.5x",
            f"idle {idle * 1e3:.0f} ms, busy {pinned * 1e3:.0f} ms (medians), {torch.get_num_threads()} threads",
        ),
        ("... busy process not pinned / idle", f"{unpinned / idle:.2f}x", "<= 2.5x", f"busy {unpinned * 1e3:.0f} ms"),
        (
            "... reference state reused (new target), busy process pinned / idle",
            f"{warm_pinned / warm_idle:.2f}x",
            "<= 2.5x",
            f"idle {warm_idle * 1e3:.0f} ms, busy {warm_pinned * 1e3:.0f} ms",
        ),
        ("alpha sweep (5 values) / one run", f"{sweep_time / ours:.2f}x", "<= 2x", f"sweep {sweep_time * 1e3:.0f} ms"),
        ("coreset 100,000 x 768 -> 256 picks", f"{coreset_time:.2f} s", "<= 5 s", f"{torch.get_num_threads()} threads"),
    ]
    print_table(("measure", "result", "target", "detail"), rows)


if __name__ == "__main__":
    main()
