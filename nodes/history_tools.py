"""DrUM History Split and DrUM History Mix: likes / dislikes of one history, and a slider between two."""

from __future__ import annotations

from comfy_api.latest import io

from drum_core.history import mix_histories, split_history
from drum_core.taste import unit_sweep

from .checked import CheckedNode
from .io_types import DrumHistory, DrumHistoryType

MAX_MIXES = 16  # a sweep's mixes: each is a whole run of the nodes after the History Mix


def _summary(history: DrumHistory) -> dict:
    return {"count": len(history.history), "source": history.history.source, "preview": history.preview()}


class DrUMHistorySplit(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMHistorySplit",
            display_name="DrUM History Split",
            category="conditioning/DrUM",
            description=(
                "Splits a rated history at a threshold: prompts rated at or above it are the likes (intensity = rating), "
                "prompts rated below it the dislikes (intensity = threshold - rating, so the most disliked weigh most). "
                "Unrated prompts go to neither side. Feed the dislikes to a second DrUM Conditioner on the NEGATIVE side to steer away from them."
            ),
            inputs=[
                DrumHistoryType.Input(
                    "history",
                    tooltip="A rated history (DrUM History Loader, or History from Outputs with likes / dislikes); unrated prompts go to neither side.",
                ),
                io.Float.Input(
                    "threshold",
                    default=3.0,
                    min=0.0,
                    max=1000.0,
                    step=0.5,
                    tooltip="Ratings >= threshold are likes, ratings below it dislikes. 3 suits a 1-5 scale.",
                ),
            ],
            outputs=[
                DrumHistoryType.Output(display_name="likes", tooltip="Ratings >= threshold, intensity = rating."),
                DrumHistoryType.Output(display_name="dislikes", tooltip="Ratings < threshold, intensity = threshold - rating."),
            ],
        )

    @classmethod
    def execute(cls, history: DrumHistory, threshold: float) -> io.NodeOutput:
        cls.check_inputs(threshold=threshold)
        likes, dislikes = (DrumHistory(side) for side in split_history(history.history, threshold))
        return io.NodeOutput(likes, dislikes, ui={"drum_split": [{"likes": _summary(likes), "dislikes": _summary(dislikes)}]})


class DrUMHistoryMix(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMHistoryMix",
            display_name="DrUM History Mix",
            category="conditioning/DrUM",
            description=(
                "Blends two histories (two people, or two styles) into one: each side is scaled to the same total intensity, "
                "then weighted (1 - mix) and mix. 0 = history A alone, 1 = history B alone; the conditioner's degree still sets "
                "how much taste goes in. A prompt in both is kept once with the summed weight. In sweep mode it gives 'count' "
                "mixes from start to end as a list: every node after it (conditioner, sampler, decode, save) runs once per mix, "
                "so one branch renders the taste moving from A to B."
            ),
            inputs=[
                DrumHistoryType.Input("history_a", tooltip="Taste A (mix = 0): a History Loader or Coreset Sampler output."),
                DrumHistoryType.Input("history_b", tooltip="Taste B (mix = 1)."),
                io.Float.Input(
                    "mix",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    display_mode=io.NumberDisplay.slider,
                    tooltip="0 = A only, 1 = B only; B's share of the total intensity (when not sweeping).",
                ),
                io.Boolean.Input(
                    "sweep", default=False, optional=True, tooltip="Give several mixes (start..end), one run of the nodes after it each."
                ),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.05, optional=True, tooltip="First mix of the sweep."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.05, optional=True, tooltip="Last mix of the sweep."),
                io.Int.Input("count", default=3, min=1, max=MAX_MIXES, optional=True, tooltip="Number of mixes (images) in the sweep."),
            ],
            outputs=[
                DrumHistoryType.Output(
                    display_name="history",
                    is_output_list=True,
                    tooltip="The mixed history (prompts of A, then B's new ones); in sweep mode one per mix, in order.",
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        history_a: DrumHistory,
        history_b: DrumHistory,
        mix: float,
        sweep: bool = False,
        start: float = 0.0,
        end: float = 1.0,
        count: int = 3,
    ) -> io.NodeOutput:
        cls.check_inputs(mix=mix, sweep=sweep, start=start, end=end, count=count)
        mixes = unit_sweep(start, end, count, "mix") if sweep else (mix,)
        mixed = [DrumHistory(mix_histories(history_a.history, history_b.history, t)) for t in mixes]
        return io.NodeOutput(mixed, ui={"drum_history": [_summary(history) | {"mix": t} for history, t in zip(mixed, mixes)]})


NODES = [DrUMHistorySplit, DrUMHistoryMix]
