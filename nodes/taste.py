"""DrUM Taste Check: does the history carry the user's taste? Text align on held-out prompts against a control (drum_core.taste)."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from drum_core.coreset import DEFAULT_MAX_COUNT
from drum_core.history import History
from drum_core.personalizer import Personalizer, check_adapter
from drum_core.taste import TasteSettings, render_taste, taste_check, unit_sweep

from . import clip_bridge
from .adapters import load_with_clip, resolve
from .checked import CheckedNode
from .io_types import AdapterChoice, DrumHistory, DrumHistoryType, DrumPeCAType

NODE = "DrUM Taste Check"


def full_history(history: DrumHistory) -> History:
    """The whole history behind a DRUM_HISTORY: a Coreset Sampler's profile holds it (effective intensities), else the history itself."""
    return history.profile.history if history.profile is not None else history.history


def coreset_settings(history: DrumHistory) -> dict:
    """The Coreset Sampler's settings carried by its output (ratio, max_count, k, seed, mode), else the defaults."""
    found = history.profile.settings if history.profile is not None else {}
    return {
        "ratio": float(found.get("ratio", 0.1)),
        "max_count": int(found.get("max_count", DEFAULT_MAX_COUNT)),
        "k": int(found.get("k", 10)),
        "coreset_seed": int(found.get("seed", 42)),
        "diverse": found.get("mode") == "diverse",
    }


def range_error(start: float, end: float, count: int) -> str | None:
    """Why the degree sweep is invalid, or None."""
    try:
        unit_sweep(start, end, count)
    except ValueError as error:
        return str(error)
    return None


class DrUMTasteCheck(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMTasteCheck",
            display_name=NODE,
            category="conditioning/DrUM",
            description=(
                "Does DrUM learn your taste? Holds out your newest prompts, builds the profile from the rest and, for a sweep "
                "of degrees, measures the paper's Text align on the held-out prompts: how close each personalized condition "
                "stays to its own prompt (Target) and how close it gets to your other held-out prompts (History), for your "
                "profile and for a control (another history, or your history shuffled). Gives the degree where your history "
                "beats the control most at a Target loss you accept. Only the CLIP is used; nothing is generated."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The model's text encoders (the ones the DrUM Conditioner uses)."),
                DrumPeCAType.Input("adapters", tooltip="The PeCA adapters (DrUM PeCA Loader)."),
                DrumHistoryType.Input(
                    "history",
                    tooltip="Your history (History Loader), or a Coreset Sampler output: its full history and its coreset settings are used.",
                ),
                io.Int.Input(
                    "held_out",
                    default=0,
                    min=0,
                    max=1000,
                    tooltip="How many of your newest prompts to hold out; 0 = 10 % of the history (2 to 20).",
                ),
                io.Float.Input(
                    "start", default=0.1, min=0.0, max=1.0, step=0.01, tooltip="First degree of the sweep (degree 0 is always measured)."
                ),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Last degree of the sweep."),
                io.Int.Input(
                    "count", default=10, min=1, max=64, tooltip="Number of degrees from start to end (the Degree Slider's sweep)."
                ),
                io.Float.Input(
                    "max_target_loss",
                    default=0.05,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Largest loss of the Target score you accept, as a fraction of degree 0's (0.05 = 5 %).",
                ),
                DrumHistoryType.Input(
                    "control",
                    optional=True,
                    tooltip="Optional: another person's history as the control; without it, your history with each prompt's "
                    "characters shuffled (seeded).",
                ),
                io.Int.Input("width", default=1024, min=256, max=4096, step=8, optional=True, tooltip="Plot width in pixels."),
                io.Int.Input("height", default=512, min=256, max=4096, step=8, optional=True, tooltip="Plot height in pixels."),
            ],
            outputs=[
                io.Image.Output(
                    display_name="IMAGE", tooltip="History against Target per degree, your profile and the control's [1, height, width, 3]."
                ),
                io.Float.Output(
                    display_name="degree",
                    tooltip="The recommended degree (0 when your history does not beat the control); connect to the Conditioner's degree.",
                ),
            ],
        )

    @classmethod
    def input_error(cls, values: dict) -> str | None:
        sweep = (values.get("start", 0.1), values.get("end", 1.0), values.get("count", 10))
        return None if None in sweep else range_error(*sweep)  # None: linked, checked at execution with the same message

    @classmethod
    def execute(
        cls,
        clip,
        adapters: AdapterChoice,
        history: DrumHistory,
        held_out: int,
        start: float,
        end: float,
        count: int,
        max_target_loss: float,
        control: DrumHistory | None = None,
        width: int = 1024,
        height: int = 512,
    ) -> io.NodeOutput:
        cls.check_inputs(held_out=held_out, start=start, end=end, count=count, max_target_loss=max_target_loss, width=width, height=height)
        state = cls.state()
        opened = clip_bridge.open_clip(state, clip)
        encoders, family = opened.encoders, opened.family
        chosen = resolve(state, adapters, encoders)
        for name, encoder in encoders.items():
            check_adapter(name, encoder, chosen[name])
        settings = TasteSettings(held_out=held_out, max_target_loss=max_target_loss, **coreset_settings(history))
        encoders = load_with_clip(state, opened, chosen.values())  # the CLIP last: its LoRAs stay in for every encode below
        personalizer = Personalizer(family, encoders, chosen, state.embeddings, clip_bridge.token_layer(clip, family))
        try:
            report = taste_check(
                personalizer,
                full_history(history),
                unit_sweep(start, end, count),
                None if control is None else full_history(control),
                settings,
                clip_bridge.progress_reporter(),
            )
        except ValueError as error:
            raise ValueError(f"{NODE}: {error}") from None
        picture = render_taste(report, (width, height))
        image = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)[None].to(clip_bridge.output_device())
        ui = {"drum_taste": [{**report.as_dict(), "table": report.table()}]}
        return io.NodeOutput(image, report.recommended, ui=ui)


NODES = [DrUMTasteCheck]
