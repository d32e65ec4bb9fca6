"""The per-family table of docs/method.md §5 restated for tests: adapters called by hand on a
host's raw states, final LayerNorm / projection by the host, assembled per family.

    family  prompt embeddings                                         pooled
    sd1     LN_L(A_L(ctx@-1).tokens)                                  P_L(LN_L(A_L(@-1).pooled))
    sd2     LN_H(A_H(ctx@-1).tokens)                                  P_H(LN_H(A_H(@-1).pooled))
    sdxl    cat(A_L(@-2).tokens, A_G(@-2).tokens), no LN              P_G(LN_G(A_G(@-1).pooled))
    sd3     cat(A_L(@-2), A_G(@-2)) padded to 4096, then A_T5 tokens  cat(P_L(LN_L(..)), P_G(LN_G(..)))
    flux    A_T5 tokens                                               LN_L(A_L(@-1).pooled)
"""

import torch
import torch.nn.functional as F


def by_hand(encoder, adapter, layer, degree, target, prompts, intensities):
    """A(ctx@layer) of `target` with `prompts` (intensities p_i) as references: raw (tokens, pooled)."""
    refs = encoder.hidden_states(list(prompts), layer)
    with torch.inference_mode():
        return adapter(encoder.empty_query(), encoder.hidden_states([target], layer), refs, torch.tensor(list(intensities)), degree)


def expected_condition(family, encoders, adapters, degree, target, prompts, intensities):
    """(prompt embeddings [1, L, D], pooled [1, P]) of the table above; encoders/adapters keyed "l", "h", "g", "t5"."""

    def run(name, layer):
        return by_hand(encoders[name], adapters[name], layer, degree, target, prompts, intensities)

    def pooled(name):
        encoder = encoders[name]
        return encoder.project(encoder.final_norm(run(name, -1)[1]))

    if family in ("sd1", "sd2"):
        name = "l" if family == "sd1" else "h"
        return encoders[name].final_norm(run(name, -1)[0]), pooled(name)
    if family == "flux":
        return run("t5", -1)[0], encoders["l"].final_norm(run("l", -1)[1])
    clip = torch.cat([run("l", -2)[0], run("g", -2)[0]], -1)
    if family == "sdxl":
        return clip, pooled("g")
    return torch.cat([F.pad(clip, (0, 4096 - clip.shape[-1])), run("t5", -1)[0]], 1), torch.cat([pooled("l"), pooled("g")], -1)
