"""DrUM Coreset Sampler: the representative prompts of a history (method.md §4, Algorithm 1)."""

from __future__ import annotations

from comfy_api.latest import io

from drum_core.coreset import coreset_sample, sample_count

from . import clip_bridge
from .caches import EMBEDDINGS
from .io_types import DrumHistory, DrumHistoryType, Profile


def sample(history: DrumHistory, clip, ratio: float, max_count: int, k: int, seed: int) -> DrumHistory:
    """The picked prompts (with their intensities) and, as profile, the full history's features."""
    full = history.history
    if len(full) == 0:
        return history
    clip_bridge.prepare(clip)
    encoder = clip_bridge.first_clip_encoder(clip_bridge.sub_encoders(clip))
    embeddings = EMBEDDINGS.pooled_features(encoder, full.prompts, clip_bridge.progress_reporter())  # [N, P]
    count = sample_count(len(full), ratio)
    if max_count > 0:
        count = min(count, max_count)
    picks = coreset_sample(embeddings, full.weights, n=count, k=k, seed=seed).tolist()
    return DrumHistory(full.subset(picks), Profile(full, embeddings, picks))


class DrUMCoresetSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMCoresetSampler",
            display_name="DrUM Coreset Sampler",
            category="conditioning/DrUM",
            description=(
                "Picks the representative prompts of a history (DrUM Algorithm 1 on pooled CLIP text features of the "
                "model's first CLIP encoder, weighted by the preference intensities). The rule favours central, typical "
                "prompts of the dominant themes. Features are cached: re-running with other settings encodes nothing."
            ),
            inputs=[
                DrumHistoryType.Input("history", tooltip="The full prompt history (DrUM History Loader)."),
                io.Clip.Input("clip", tooltip="The model's text encoders; the pooled CLIP-L (SD2: CLIP-H) features drive the sampling."),
                io.Float.Input(
                    "ratio",
                    default=0.1,
                    min=0.001,
                    max=1.0,
                    step=0.001,
                    tooltip="Fraction of the history to keep: n = max(1, round(ratio * N)).",
                ),
                io.Int.Input("max_count", default=0, min=0, max=100000, tooltip="Upper bound on the number of picks; 0 = no bound."),
                io.Int.Input("k", default=10, min=1, max=10000, tooltip="Size of the random anchor set A that seeds the scores."),
                io.Int.Input("seed", default=42, min=0, max=2**31 - 1, control_after_generate=False, tooltip="Seed of the anchor set A."),
            ],
            outputs=[
                DrumHistoryType.Output(
                    display_name="coreset",
                    tooltip="The picked prompts with their intensities (and the full history, for the profile preview).",
                )
            ],
        )

    @classmethod
    def execute(cls, history: DrumHistory, clip, ratio: float, max_count: int, k: int, seed: int) -> io.NodeOutput:
        picked = sample(history, clip, ratio, max_count, k, seed)
        return io.NodeOutput(picked, ui={"drum_picks": picked.preview(limit=len(picked.history))})


NODES = [DrUMCoresetSampler]
