"""DrUM Coreset Sampler: the representative prompts of a history (docs/method.md §4, Algorithm 1)."""

from __future__ import annotations

from comfy_api.latest import io

from drum_core import defaults
from drum_core.coreset import CORESET_MODES, DEFAULT_MAX_COUNT, coreset_sample, sample_count
from drum_core.history import recency_intensities

from . import clip_bridge
from .caches import first_clip_encoder, pooled_history_features
from .checked import CheckedNode
from .io_types import DrumHistory, DrumHistoryType, Profile
from .state import DrumState


def sample(
    state: DrumState,
    history: DrumHistory,
    clip,
    ratio: float,
    max_count: int,
    k: int,
    seed: int,
    mode: str = "published",
    half_life_days: float = 0.0,
) -> DrumHistory:
    """The picked prompts with their effective intensities (recency-decayed when half_life_days > 0)
    and, as profile, the full history (effective intensities) with its features."""
    if mode not in CORESET_MODES:
        raise ValueError(f"DrUM Coreset Sampler: mode must be one of {', '.join(CORESET_MODES)}, got {mode!r}")
    if len(history.history) == 0:
        return history
    full = history.history.with_intensities(recency_intensities(history.history, half_life_days))
    opened = clip_bridge.open_clip(state, clip)
    embeddings = pooled_history_features(state, opened, full.prompts)  # [N, P]
    count = sample_count(len(full), ratio, max_count=max_count)
    picks = coreset_sample(embeddings, full.intensities, n=count, k=k, seed=seed, diverse=mode == "diverse").tolist()
    settings = {"ratio": ratio, "max_count": max_count, "k": k, "seed": seed, "mode": mode, "half_life_days": half_life_days}
    return DrumHistory(full.subset(picks), Profile(full, embeddings, picks, first_clip_encoder(opened).fingerprint, settings))


class DrUMCoresetSampler(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMCoresetSampler",
            display_name="DrUM Coreset Sampler",
            category="conditioning/DrUM",
            description=(
                "Picks the representative prompts of a history (DrUM Algorithm 1 on pooled CLIP text features of the "
                "model's first CLIP encoder, weighted by the preference intensities). Mode 'published' favours central, "
                "typical prompts of the dominant themes; 'diverse' spreads the picks over every theme. A half-life makes older "
                "prompts count less. Features are cached: re-running with other settings encodes nothing."
            ),
            inputs=[
                DrumHistoryType.Input("history", tooltip="The full prompt history (DrUM History Loader)."),
                io.Clip.Input("clip", tooltip="The model's text encoders; the pooled CLIP-L (SD2: CLIP-H) features drive the sampling."),
                io.Float.Input(
                    "ratio",
                    default=defaults.RATIO,
                    min=0.001,
                    max=1.0,
                    step=0.001,
                    tooltip="Fraction of the history to keep: n = max(1, round(ratio * N)).",
                ),
                io.Int.Input(
                    "max_count",
                    default=DEFAULT_MAX_COUNT,
                    min=0,
                    max=100000,
                    tooltip="Upper bound on the number of picks (each costs GPU memory: about 20 MB on SDXL); 0 = no bound, the paper's rule.",
                ),
                io.Int.Input("k", default=defaults.K, min=1, max=10000, tooltip="Size of the random anchor set A that seeds the scores."),
                io.Int.Input(
                    "seed", default=defaults.SEED, min=0, max=2**31 - 1, control_after_generate=False, tooltip="Seed of the anchor set A."
                ),
                io.Combo.Input(
                    "mode",
                    options=list(CORESET_MODES),
                    default="published",
                    optional=True,
                    tooltip=(
                        "published: the paper's rule, central prompts of the dominant (intensity-weighted) theme. "
                        "diverse: far-apart prompts, so minor themes get picks too."
                    ),
                ),
                io.Float.Input(
                    "half_life_days",
                    default=0.0,
                    min=0.0,
                    max=36500.0,
                    step=1.0,
                    optional=True,
                    tooltip=(
                        "Recency: intensity x 0.5^(age / half-life), age in days before the history's newest timestamp. "
                        "0 = off. Needs a history with timestamps (csv/json/jsonl); prompts without one keep their intensity. "
                        "The decayed intensities are also what the conditioner uses."
                    ),
                ),
            ],
            outputs=[
                DrumHistoryType.Output(
                    display_name="coreset",
                    tooltip="The picked prompts with their intensities (and the full history, for the profile preview).",
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        history: DrumHistory,
        clip,
        ratio: float,
        max_count: int,
        k: int,
        seed: int,
        mode: str = "published",
        half_life_days: float = 0.0,
    ) -> io.NodeOutput:
        cls.check_inputs(ratio=ratio, max_count=max_count, k=k, seed=seed, mode=mode, half_life_days=half_life_days)
        picked = sample(cls.state(), history, clip, ratio, max_count, k, seed, mode, half_life_days)
        return io.NodeOutput(picked, ui={"drum_picks": picked.preview(limit=len(picked.history))})


NODES = [DrUMCoresetSampler]
