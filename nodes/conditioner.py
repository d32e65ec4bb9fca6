"""DrUM Conditioner: a prompt personalized by a history, as ordinary CONDITIONING (method.md §5)."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from drum_core.personalizer import Personalizer, check_adapter

from . import clip_bridge
from .adapters import resolve
from .caches import EMBEDDINGS, personalizer
from .io_types import AdapterChoice, Degrees, DrumDegreesType, DrumHistory, DrumHistoryType, DrumPeCAType

log = logging.getLogger(__name__)
TOKEN_KEYS = ("attention_mask",)  # extras that describe the old tokens: dropped when the tokens change


def personalized_tokens(
    clip, choice: AdapterChoice, history: DrumHistory, text: str, alphas: list[float]
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(tokens [B, L, D], pooled [B, P] or None, family) for one row per alpha, on ComfyUI's intermediate device.

    Adapters are matched and checked before anything is encoded. An empty history gives
    ComfyUI's own text-encode output (repeated per alpha).
    """
    clip_bridge.prepare(clip)
    encoders = clip_bridge.sub_encoders(clip)
    family = clip_bridge.family_of(clip, encoders)
    adapters = resolve(choice, encoders)
    for name, encoder in encoders.items():
        check_adapter(name, encoder, adapters[name])
    if len(history.history) == 0:
        cond, extras = clip_bridge.plain_conditioning(clip, text)[0]
        pooled = extras.get("pooled_output")
        batch = len(alphas)
        return cond.repeat(batch, 1, 1), None if pooled is None else pooled.repeat(batch, 1), family
    device = clip_bridge.adapter_device()
    for adapter in adapters.values():
        adapter.to(device)
    layer = clip_bridge.token_layer(clip, family)

    def build() -> Personalizer:
        built = Personalizer(family, encoders, adapters, EMBEDDINGS, layer, clip_bridge.progress_reporter())
        built.set_history(history.history.prompts, history.history.weights)
        return built

    key = (family, layer, history.digest, tuple((n, e.fingerprint, id(adapters[n])) for n, e in sorted(encoders.items())))
    chosen = personalizer(key, build)
    chosen.rebind(encoders)  # a cached one may hold an earlier, identical CLIP object
    condition = chosen.condition(text, alphas)
    out = clip_bridge.output_device()
    return condition.tokens.to(out), None if condition.pooled is None else condition.pooled.to(out), family


def build_conditioning(tokens: torch.Tensor, pooled: torch.Tensor | None, base: list | None, defaults: dict) -> list:
    """CONDITIONING entries: one per entry of `base` (its extras carried over, copied), else one."""
    entries = []
    for _cond, extras in base or [[None, defaults]]:
        extras = {k: v for k, v in extras.items() if k not in TOKEN_KEYS}
        extras.pop("pooled_output", None)
        if pooled is not None:
            extras["pooled_output"] = pooled
        entries.append([tokens, extras])
    return entries


class DrUMConditioner(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMConditioner",
            display_name="DrUM Conditioner",
            category="conditioning/DrUM",
            description=(
                "Encodes the prompt and fuses it with the history's prompts through the PeCA adapters (DrUM): ordinary "
                "CONDITIONING for SD1, SD2, SDXL, SD3 and FLUX, to use wherever a CLIP Text Encode output goes. The history "
                "is encoded once and cached; changing only the prompt or the degree re-encodes nothing. An empty history "
                "gives the plain CLIP Text Encode output. Long prompts: the adapter runs on every 77-token chunk."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The model's text encoders (CLIP Set Last Layer and CLIP LoRAs are honoured)."),
                DrumPeCAType.Input("adapters", tooltip="The PeCA adapters (DrUM PeCA Loader)."),
                DrumHistoryType.Input("history", tooltip="The reference prompts: a DrUM Coreset Sampler or History Loader output."),
                io.String.Input("text", multiline=True, dynamic_prompts=True, tooltip="The prompt to personalize."),
                io.Float.Input(
                    "degree",
                    default=0.3,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    display_mode=io.NumberDisplay.slider,
                    tooltip="Personalization degree alpha: 0 = the prompt alone, 1 = the history alone (paper default 0.3).",
                ),
                io.Conditioning.Input(
                    "conditioning",
                    optional=True,
                    tooltip="Optional: a conditioning whose extra settings are kept (FLUX guidance, SDXL sizes, timestep range, ...).",
                ),
                DrumDegreesType.Input(
                    "degrees", optional=True, tooltip="Optional: several degrees from DrUM Degree Slider; overrides 'degree'."
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    display_name="CONDITIONING", tooltip="The personalized conditioning; a batch when several degrees are given."
                )
            ],
        )

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
    ) -> io.NodeOutput:
        alphas = list(degrees.values) if degrees is not None else [degree]
        tokens, pooled, family = personalized_tokens(clip, adapters, history, text, alphas)
        log.debug("DrUM: %s conditioning %s for degrees %s", family, list(tokens.shape), alphas)
        ui = {
            "drum_conditioning": [
                {"family": family, "degrees": alphas, "references": history.preview(limit=len(history.history)), "adapters": adapters.files}
            ]
        }
        return io.NodeOutput(build_conditioning(tokens, pooled, conditioning, clip_bridge.hooks_extras(clip)), ui=ui)


NODES = [DrUMConditioner]
