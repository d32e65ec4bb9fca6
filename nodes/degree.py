"""DrUM Degree Slider: the personalization degree alpha, or a sweep of them for one side-by-side batch."""

from __future__ import annotations

from comfy_api.latest import io

from drum_core import defaults
from drum_core.taste import unit_sweep

from .checked import CheckedNode
from .io_types import Degrees, DrumDegreesType


def degree_input(tooltip: str) -> io.Float.Input:
    """The degree alpha on a slider from 0 (the prompt alone) to 1 (the history alone), default the paper's (drum_core.defaults.DEGREE)."""
    return io.Float.Input(
        "degree", default=defaults.DEGREE, min=0.0, max=1.0, step=0.01, display_mode=io.NumberDisplay.slider, tooltip=tooltip
    )


def degree_values(degree: float, sweep: bool, start: float, end: float, count: int) -> tuple[float, ...]:
    """(degree,) or `count` evenly spaced values from start to end (both included)."""
    return unit_sweep(start, end, count) if sweep else (degree,)


class DrUMDegreeSlider(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMDegreeSlider",
            display_name="DrUM Degree Slider",
            category="conditioning/DrUM",
            description=(
                "The personalization degree alpha (0 = the prompt alone, 1 = the history alone). In sweep mode it gives "
                "'count' values from start to end: the DrUM Conditioner then returns a batch of conditions, one per value, "
                "so one run renders the styles side by side. Connect batch_size to the Empty Latent Image's batch_size."
            ),
            inputs=[
                degree_input("alpha when not sweeping."),
                io.Boolean.Input("sweep", default=False, tooltip="Give several degrees (start..end) for one side-by-side batch."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="First degree of the sweep."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Last degree of the sweep."),
                io.Int.Input("count", default=4, min=1, max=64, tooltip="Number of degrees (images) in the sweep."),
            ],
            outputs=[
                DrumDegreesType.Output(display_name="degrees", tooltip="The degree(s); connect to the DrUM Conditioner's degrees input."),
                io.Int.Output(display_name="batch_size", tooltip="How many degrees: the batch size for the Empty Latent Image."),
            ],
        )

    @classmethod
    def execute(cls, degree: float, sweep: bool, start: float, end: float, count: int) -> io.NodeOutput:
        cls.check_inputs(degree=degree, sweep=sweep, start=start, end=end, count=count)
        values = degree_values(degree, sweep, start, end, count)
        return io.NodeOutput(Degrees(values), len(values))


NODES = [DrUMDegreeSlider]
