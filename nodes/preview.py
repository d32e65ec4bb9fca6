"""DrUM Profile Preview: the history on a 2-D map with the coreset highlighted, as an IMAGE."""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from drum_core.profile_picture import project_2d, render_profile

from . import clip_bridge
from .checked import CheckedNode
from .io_types import Degrees, DrumDegreesType, DrumHistory, DrumHistoryType
from .profiles import profile_of

MAP_POINTS = 400  # prompts the page's map draws at most (every pick, then the first others)


def map_output(features, picks, prompts, intensities, degrees: tuple[float, ...] | None = None) -> dict:
    """The page's map of the profile: points [x, y] in 0..1 (the picture's 2-D projection), with each one's prompt,
    intensity and pick rank (0 = not picked); `hidden` counts prompts left off (beyond MAP_POINTS); `degrees`: the
    degree(s) alpha linked in (a list), or None."""
    coords = project_2d(features)
    low, high = coords.min(0).values, coords.max(0).values
    span = torch.where(high - low > 0, high - low, torch.ones_like(high))
    unit = ((coords - low) / span).tolist()
    rank = {index: position for position, index in enumerate(picks, 1)}
    shown = list(dict.fromkeys([*picks, *range(len(prompts))]))[:MAP_POINTS]
    points = [
        {
            "x": round(unit[i][0], 4),
            "y": round(unit[i][1], 4),
            "prompt": prompts[i],
            "weight": float(intensities[i]),
            "pick": rank.get(i, 0),
        }
        for i in shown
    ]
    shape = {"points": points, "count": len(prompts), "picks": len(picks), "hidden": len(prompts) - len(shown)}
    return {**shape, "degrees": None if degrees is None else [float(d) for d in degrees]}


class DrUMProfilePreview(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMProfilePreview",
            display_name="DrUM Profile Preview",
            category="conditioning/DrUM",
            description=(
                "Draws the history as a 2-D map (PCA of the pooled CLIP text features) with the coreset picks numbered in "
                "pick order and listed with their intensities. Connect a Preview Image or Save Image node, and the DrUM Conditioner's "
                "degrees output to name the degree alpha."
            ),
            inputs=[
                DrumHistoryType.Input("history", tooltip="A DrUM Coreset Sampler output (or any history, with a CLIP)."),
                io.Int.Input("width", default=1024, min=256, max=4096, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=512, min=256, max=4096, step=8, tooltip="Image height in pixels."),
                io.Clip.Input("clip", optional=True, tooltip="Only needed for a history that did not come from the Coreset Sampler."),
                DrumDegreesType.Input(
                    "degrees",
                    optional=True,
                    tooltip="The degree(s) alpha the taste goes in at: the DrUM Conditioner's degrees output (or the Degree "
                    "Slider's it gets); the map and the picture say them.",
                ),
            ],
            outputs=[io.Image.Output(display_name="IMAGE", tooltip="The profile picture [1, height, width, 3].")],
        )

    @classmethod
    def execute(cls, history: DrumHistory, width: int, height: int, clip=None, degrees: Degrees | None = None) -> io.NodeOutput:
        cls.check_inputs(width=width, height=height)
        profile = profile_of(cls.state(), history, clip, "DrUM Profile Preview")
        full = profile.history
        values = None if degrees is None else degrees.values
        picture = render_profile(profile.features, profile.picks, full.prompts, full.intensities, (width, height), degrees=values)
        image = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)[None]  # [1, H, W, 3]
        ui = {"drum_map": [map_output(profile.features, profile.picks, full.prompts, full.intensities, values)]}
        return io.NodeOutput(image.to(clip_bridge.output_device()), ui=ui)


NODES = [DrUMProfilePreview]
