"""CLIP's causal pre-LN text transformer written out in float64, for transformers and open_clip
weights alike: the independent computation the encoder backends are checked against."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ACTIVATIONS = {"quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "gelu": F.gelu}


@dataclass
class TextTower:
    """float64 weights: token [V, E] and position [77, E] embeddings; per block a dict of (weight, bias)
    for ln1, q, k, v, out, ln2, fc1, fc2; the final LayerNorm; the pooled projection as (weight [P, E], bias or None)."""

    token_embedding: torch.Tensor
    position_embedding: torch.Tensor
    blocks: list[dict]
    final_norm: tuple
    projection: tuple | None
    heads: int
    activation: str
    eps: float


def run(tower: TextTower, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """([embeddings, block 1, ..., block L] each [N, 77, E], final LayerNorm of the last) in float64."""
    x = tower.token_embedding[ids] + tower.position_embedding[: ids.shape[1]]
    n, t, e = x.shape
    causal = torch.full((t, t), -math.inf, dtype=torch.float64).triu(1)
    outputs = [x]
    for block in tower.blocks:

        def linear(h, name, block=block):
            weight, bias = block[name]
            return h @ weight.T + bias

        h = F.layer_norm(x, (e,), *block["ln1"], tower.eps)
        q, k, v = (linear(h, name).view(n, t, tower.heads, -1).transpose(1, 2) for name in "qkv")
        scores = q @ k.transpose(-1, -2) / math.sqrt(e // tower.heads) + causal
        x = x + linear((scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, e), "out")
        h = F.layer_norm(x, (e,), *block["ln2"], tower.eps)
        x = x + linear(ACTIVATIONS[tower.activation](linear(h, "fc1")), "fc2")
        outputs.append(x)
    return outputs, F.layer_norm(x, (e,), *tower.final_norm, tower.eps)


def pooled(tower: TextTower, final: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """[N, P]: the final-normed state at each pooling position, projected where the tower projects."""
    out = final[torch.arange(final.shape[0]), positions]
    if tower.projection is None:
        return out
    weight, bias = tower.projection
    return out @ weight.T + (0 if bias is None else bias)


def transformers_tower(model) -> TextTower:
    """A transformers CLIPTextModel / CLIPTextModelWithProjection."""
    w = {k.removeprefix("text_model."): v.double() for k, v in model.state_dict().items()}
    names = {"ln1": "layer_norm1", "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj"}
    names.update(out="self_attn.out_proj", ln2="layer_norm2", fc1="mlp.fc1", fc2="mlp.fc2")
    config = model.config
    blocks = [
        {key: (w[f"encoder.layers.{i}.{name}.weight"], w[f"encoder.layers.{i}.{name}.bias"]) for key, name in names.items()}
        for i in range(config.num_hidden_layers)
    ]
    projection = (w["text_projection.weight"], None) if "text_projection.weight" in w else None
    final = (w["final_layer_norm.weight"], w["final_layer_norm.bias"])
    return TextTower(
        w["embeddings.token_embedding.weight"],
        w["embeddings.position_embedding.weight"],
        blocks,
        final,
        projection,
        config.num_attention_heads,
        config.hidden_act,
        config.layer_norm_eps,
    )


def open_clip_tower(model) -> TextTower:
    """An open_clip CLIP (text tower inlined, projection a Parameter [E, P]) or CustomTextCLIP (a Linear)."""
    tower = getattr(model, "text", model)
    blocks = []
    for block in tower.transformer.resblocks:
        w = {k: v.double() for k, v in block.state_dict().items()}
        q, k, v = w["attn.in_proj_weight"].chunk(3)
        qb, kb, vb = w["attn.in_proj_bias"].chunk(3)
        blocks.append(
            {
                "ln1": (w["ln_1.weight"], w["ln_1.bias"]),
                "q": (q, qb),
                "k": (k, kb),
                "v": (v, vb),
                "out": (w["attn.out_proj.weight"], w["attn.out_proj.bias"]),
                "ln2": (w["ln_2.weight"], w["ln_2.bias"]),
                "fc1": (w["mlp.c_fc.weight"], w["mlp.c_fc.bias"]),
                "fc2": (w["mlp.c_proj.weight"], w["mlp.c_proj.bias"]),
            }
        )
    projection = tower.text_projection
    if isinstance(projection, torch.nn.Linear):
        projection = (projection.weight.double(), None if projection.bias is None else projection.bias.double())
    else:
        projection = (projection.double().T, None)
    activation = "quick_gelu" if type(tower.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU" else "gelu"
    return TextTower(
        tower.token_embedding.weight.double(),
        tower.positional_embedding.double(),
        blocks,
        (tower.ln_final.weight.double(), tower.ln_final.bias.double()),
        projection,
        tower.transformer.resblocks[0].attn.num_heads,
        activation,
        tower.ln_final.eps,
    )
