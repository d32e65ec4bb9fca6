"""A PeCA adapter with a known behaviour, for tests that need the taste signal to be real.

`mixing_adapter(adapter)` rewrites an adapter in place so that every block attends uniformly
(query and key weights 0) to the value = the token states themselves, and its output swamps the
query (proj = 100 * I, no feed-forward, unit LayerNorms): each block returns
LN((1 - alpha) * mean(target tokens) + alpha * sum_i w_i * mean(reference_i tokens)). With CLIP's
causal states (every padding position summarises the prompt) its pooled vector moves from the
prompt's towards its references' as alpha grows, which a random adapter does not do.
"""

from __future__ import annotations

import torch

from drum_core.peca import PeCA

GAIN = 100.0


def mixing_adapter(adapter: PeCA) -> PeCA:
    with torch.no_grad():
        for block in adapter.tf:
            attention = block.attn
            width = attention.value.weight.shape[0]
            for linear in (attention.query, attention.key):
                linear.weight.zero_()
                linear.bias.zero_()
            attention.value.weight.copy_(torch.eye(width))
            attention.value.bias.zero_()
            attention.proj.weight.copy_(GAIN * torch.eye(width))
            attention.proj.bias.zero_()
            block.ff[-1].weight.zero_()
            block.ff[-1].bias.zero_()
            for norm in (block.norm1, block.norm2):
                norm.weight.fill_(1.0)
                norm.bias.zero_()
    return adapter
