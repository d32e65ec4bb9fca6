"""DrUM Conditioner: a prompt personalized by a history, as ordinary CONDITIONING (docs/method.md §5)."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from drum_core.personalizer import Personalizer, check_adapter, first_clip

from . import clip_bridge
from .adapters import load_with_clip, resolve
from .caches import personalizer
from .checked import CheckedNode
from .degree import degree_input
from .io_types import AdapterChoice, Degrees, DrumDegreesType, DrumHistory, DrumHistoryType, DrumPeCAType
from .state import DrumState

log = logging.getLogger(__name__)
TOKEN_KEYS = ("attention_mask",)  # extras that describe the old tokens: dropped when the tokens change, or replaced


def plain_tokens(clip, text: str, batch: int) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """ComfyUI's own CLIP Text Encode output of `text`: (tokens [B, L, D], pooled [B, P] or None, its other extras:
    the attention mask, HiDream's Llama states), repeated to `batch` rows."""
    cond, extras = clip_bridge.plain_conditioning(clip, text)[0]
    pooled = extras.get("pooled_output")
    others = {k: v for k, v in extras.items() if k != "pooled_output"}
    if "attention_mask" in others:
        others["attention_mask"] = others["attention_mask"].repeat(batch, 1)
    return cond.repeat(batch, 1, 1), None if pooled is None else pooled.repeat(batch, 1), others


def personalized_tokens(
    state: DrumState,
    opened: clip_bridge.OpenedClip,
    choice: AdapterChoice,
    history: DrumHistory,
    text: str,
    degrees: list[float],
    relevant: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, dict, list[int] | None]:
    """(tokens [B, L, D], pooled [B, P] or None, extras, chosen) for one row per degree, on ComfyUI's intermediate device;
    extras: the family's T5 attention mask [B, L] (LTX-Video, Mochi) and the streams it passes through untouched
    (HiDream's Llama states, from ComfyUI's own encode); chosen: the history rows `relevant` kept (what the node's
    panel lists), as the Personalizer picked them, or None where every row took part.

    Adapters are matched and checked before anything is encoded. An empty history gives
    ComfyUI's own text-encode output (repeated per degree). `relevant` m > 0: only the m history
    prompts most similar to `text` are references (their features from the history's profile or the cache).
    """
    encoders, family, clip = opened.encoders, opened.family, opened.clip
    adapters = resolve(state, choice, encoders)
    for name, encoder in encoders.items():
        check_adapter(name, encoder, adapters[name])
    if len(history.history) == 0:
        return (*plain_tokens(clip, text, len(degrees)), None)
    extras = clip_bridge.passthrough_extras(opened, text)
    encoders = load_with_clip(state, opened, adapters.values(), text)  # the CLIP last: its LoRAs stay in for every encode below
    layer = clip_bridge.token_layer(clip, family)

    def build() -> Personalizer:
        built = Personalizer(family, encoders, adapters, state.embeddings, layer, clip_bridge.progress_reporter())
        clips = any(encoder.kind == "clip" for encoder in encoders.values())  # T5-only families have no pooled features
        features = history.reference_features(encoders[first_clip(encoders)].fingerprint) if clips else None  # None: from their pass
        built.set_history(history.history.prompts, history.history.intensities, features=features)
        return built

    key = (family, layer, history.digest, tuple((n, e.fingerprint, id(adapters[n])) for n, e in sorted(encoders.items())))
    with personalizer(state, key, build) as chosen:
        chosen.rebind(encoders)  # a cached one may hold an earlier, identical CLIP object
        condition = chosen.condition(text, degrees, relevant=relevant)
    out = clip_bridge.output_device()
    if condition.attention_mask is not None:
        extras["attention_mask"] = condition.attention_mask.to(out)
    chosen = None if condition.chosen is None else condition.chosen.tolist()
    return condition.tokens.to(out), None if condition.pooled is None else condition.pooled.to(out), extras, chosen


def build_conditioning(tokens: torch.Tensor, pooled: torch.Tensor | None, base: list | None, defaults: dict, own: dict) -> list:
    """CONDITIONING entries: one per entry of `base` (its extras carried over, copied), else one with `defaults`; `own`:
    the extras that belong to these tokens (their attention mask, passed-through streams), set on every entry."""
    entries = []
    for _cond, extras in base or [[None, defaults]]:
        extras = {k: v for k, v in extras.items() if k not in TOKEN_KEYS}
        extras["pooled_output"] = pooled  # None where the family has none (PixArt, Chroma, LTX-Video, Mochi), as ComfyUI's own
        extras.update(own)
        entries.append([tokens, extras])
    return entries


def with_timestep_range(personalized: list, plain: list, start: float, end: float) -> list:
    """`personalized` entries for sampling steps in [start, end], `plain` ones for the rest, with the keys
    ComfyUI's ConditioningSetTimestepRange sets ("start_percent" / "end_percent")."""

    def ranged(entries: list, first: float, last: float) -> list:
        return [[cond, {**extras, "start_percent": first, "end_percent": last}] for cond, extras in entries]

    before = ranged(plain, 0.0, start) if start > 0 else []
    after = ranged(plain, end, 1.0) if end < 1 else []
    return ranged(personalized, start, end) + before + after


def range_error(start_percent: float, end_percent: float) -> str | None:
    """Why a personalization range is invalid, or None."""
    if not (0.0 <= start_percent <= 1.0 and 0.0 <= end_percent <= 1.0):
        return f"start_percent ({start_percent}) and end_percent ({end_percent}) must lie in [0, 1]"
    if start_percent >= end_percent:
        return f"start_percent ({start_percent}) must be below end_percent ({end_percent}): the range of personalized steps is empty"
    return None


class DrUMConditioner(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMConditioner",
            display_name="DrUM Conditioner",
            category="conditioning/DrUM",
            description=(
                "Encodes the prompt and fuses it with the history's prompts through the PeCA adapters (DrUM): ordinary "
                "CONDITIONING for SD1, SD2, SDXL, SD3, FLUX, Chroma/PixArt, LTX-Video, Mochi and HiDream, to use wherever a "
                "CLIP Text Encode output goes; the family is the CLIP's exact set of text encoders, and any other set is "
                "refused with an error naming its encoders. The history "
                "is encoded once and cached; changing only the prompt or the degree re-encodes nothing. An empty history "
                "gives the plain CLIP Text Encode output. Long prompts: the adapter runs on every 77-token chunk."
            ),
            inputs=[
                io.Clip.Input(
                    "clip",
                    tooltip="The model's text encoders (CLIP Set Last Layer and CLIP LoRAs are honoured): SD1, SD2, SDXL, SD3, "
                    "FLUX, Chroma/PixArt, LTX-Video, Mochi or HiDream; other encoder sets are refused by name.",
                ),
                DrumPeCAType.Input("adapters", tooltip="The PeCA adapters (DrUM PeCA Loader)."),
                DrumHistoryType.Input("history", tooltip="The reference prompts: a DrUM Coreset Sampler or History Loader output."),
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="The prompt to personalize."),
                degree_input("Personalization degree alpha: 0 = the prompt alone, 1 = the history alone (paper default 0.3)."),
                io.Conditioning.Input(
                    "conditioning",
                    optional=True,
                    tooltip="Optional: a conditioning whose extra settings are kept (FLUX guidance, SDXL sizes, timestep range, ...).",
                ),
                DrumDegreesType.Input(
                    "degrees", optional=True, tooltip="Optional: several degrees from DrUM Degree Slider; overrides 'degree'."
                ),
                io.Int.Input(
                    "relevant",
                    default=0,
                    min=0,
                    max=100000,
                    optional=True,
                    tooltip="Use only the m history prompts most similar to this prompt (cosine of pooled CLIP features; ties: "
                    "earlier prompt); 0 = all. No history prompt is re-encoded for it.",
                ),
                io.Float.Input(
                    "start_percent",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.001,
                    optional=True,
                    tooltip="First sampling step (as a fraction) that gets the personalized conditioning; before it, the plain prompt.",
                ),
                io.Float.Input(
                    "end_percent",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.001,
                    optional=True,
                    tooltip="Last sampling step (as a fraction) that gets the personalized conditioning; after it, the plain prompt. "
                    "Set as ConditioningSetTimestepRange does, so every sampler handles it.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    display_name="CONDITIONING", tooltip="The personalized conditioning; a batch when several degrees are given."
                ),
                DrumDegreesType.Output(
                    display_name="degrees",
                    tooltip="The degree(s) alpha this conditioning was made with; connect to a DrUM Profile Preview's degrees "
                    "so its map says how much of this taste goes in.",
                ),
            ],
        )

    @classmethod
    def input_error(cls, values: dict) -> str | None:
        start, end = values.get("start_percent", 0.0), values.get("end_percent", 1.0)
        return None if start is None or end is None else range_error(start, end)  # None: linked, checked at execution

    @classmethod
    def execute(
        cls,
        clip,
        adapters: AdapterChoice,
        history: DrumHistory,
        text: str,
        degree: float,
        conditioning: list | None = None,
        degrees: Degrees | None = None,
        relevant: int = 0,
        start_percent: float = 0.0,
        end_percent: float = 1.0,
    ) -> io.NodeOutput:
        cls.check_inputs(text=text, degree=degree, relevant=relevant, start_percent=start_percent, end_percent=end_percent)
        used = degrees if degrees is not None else Degrees((float(degree),))  # the degree(s) of this conditioning: its second output
        batch_degrees = list(used.values)
        state = cls.state()
        opened = clip_bridge.open_clip(state, clip, text)  # the family first: a refused encoder set stops here
        family = opened.family
        tokens, pooled, own, chosen = personalized_tokens(state, opened, adapters, history, text, batch_degrees, relevant)
        log.debug("DrUM: %s conditioning %s for degrees %s", family, list(tokens.shape), batch_degrees)
        references = history.preview(limit=len(history.history))
        if chosen is not None:
            references = [references[row] for row in chosen]
        ui = {"drum_conditioning": [{"family": family, "degrees": batch_degrees, "references": references, "adapters": adapters.files}]}
        extras = clip_bridge.hooks_extras(clip)
        entries = build_conditioning(tokens, pooled, conditioning, extras, own)
        if (start_percent, end_percent) != (0.0, 1.0):
            plain_cond, plain_pooled, plain_own = plain_tokens(clip, text, len(batch_degrees))
            plain = build_conditioning(plain_cond, plain_pooled, conditioning, extras, plain_own)
            entries = with_timestep_range(entries, plain, start_percent, end_percent)
        return io.NodeOutput(entries, used, ui=ui)


NODES = [DrUMConditioner]
