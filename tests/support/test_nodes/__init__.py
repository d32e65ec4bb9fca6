"""TEST-ONLY ComfyUI node pack: the server tier links it into custom_nodes beside ComfyUI-DrUM.

Never install it for real use. It exists because the FLUX and SD3 text encoders cannot be
files in a test: ComfyUI builds T5-XXL from a fixed config (4.76B parameters, ~10 GB even in
fp16) whatever the checkpoint holds. So:

- DrUMTestTinyCLIP returns a REAL `comfy.sd.CLIP` of a family (ComfyUI's own tokenizers and
  encoder classes, `tests/support/tiny_models.tiny_clip`) with shrunken depths and random,
  seeded weights, in place of DualCLIPLoader / TripleCLIPLoader / a checkpoint's CLIP. The
  widths stay real (768 / 1280 / 4096), so the published adapter and model shapes apply.
  Its `family` also offers the encoder sets DrUM refuses (support.tiny_models REFUSED: HunyuanVideo,
  Kandinsky 5, ... built from ComfyUI's own classes with one small layer).
- DrUMTestConditioningProbe passes a CONDITIONING through unchanged and reports what it holds
  (token and pooled shapes, the FLUX guidance, the extras' keys, the attention mask) in the prompt's
  history, so a test sees exactly what the sampler receives. It is an output node: a graph may end in it.
- DrUMTestHistoryProbe, an output node, reports every record of a DRUM_HISTORY (prompt, intensity,
  timestamp, rating) in the prompt's history, so a history node can run without a sampler.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from comfy_api.latest import ComfyExtension, io

SUPPORT = Path(__file__).resolve().parents[1]  # tests/support (through the custom_nodes symlink)
SUPPORT_MODULE = "drum_test_support"  # a private name: nothing else on ComfyUI's sys.path is touched
FAMILIES = ["sd1", "sd2", "sdxl", "sd3", "flux", "pixart", "ltxv", "mochi", "hidream"]  # support.tiny_models FAMILIES + NEW_FAMILIES
REFUSED = ["hunyuan_video", "kandinsky5", "lumina2", "qwen_image", "hunyuan_image", "omnigen2", "wan", "cosmos", "long_clip_l"]


def tiny_models():
    """tests/support/tiny_models.py, imported as part of the support package under SUPPORT_MODULE."""
    if SUPPORT_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(SUPPORT_MODULE, SUPPORT / "__init__.py", submodule_search_locations=[str(SUPPORT)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[SUPPORT_MODULE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{SUPPORT_MODULE}.tiny_models")


class TinyCLIP(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMTestTinyCLIP",
            display_name="DrUM TEST Tiny CLIP",
            category="testing/DrUM",
            description="TEST ONLY: a random-weight ComfyUI CLIP of a family with shrunken depths (real widths).",
            inputs=[
                io.Combo.Input("family", options=FAMILIES + REFUSED, default="flux"),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
            ],
            outputs=[io.Clip.Output()],
        )

    @classmethod
    def execute(cls, family: str, seed: int) -> io.NodeOutput:
        return io.NodeOutput(tiny_models().tiny_clip(family, seed=seed))


class ConditioningProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMTestConditioningProbe",
            display_name="DrUM TEST Conditioning Probe",
            category="testing/DrUM",
            description="TEST ONLY: passes the conditioning through and reports its shapes and extras in the history.",
            inputs=[io.Conditioning.Input("conditioning")],
            outputs=[io.Conditioning.Output()],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, conditioning: list) -> io.NodeOutput:
        report = []
        for tokens, extras in conditioning:
            pooled = extras.get("pooled_output")
            report.append(
                {
                    "tokens": list(tokens.shape),
                    "token_mean_abs": float(tokens.float().abs().mean()),
                    "pooled": None if pooled is None else list(pooled.shape),
                    "guidance": extras.get("guidance"),
                    "keys": sorted(extras),
                    "attention_mask": extras["attention_mask"].tolist() if "attention_mask" in extras else None,
                    "tokens_sample": tokens[0, :4, :4].float().tolist(),
                }
            )
        return io.NodeOutput(conditioning, ui={"drum_probe": report})


class HistoryProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMTestHistoryProbe",
            display_name="DrUM TEST History Probe",
            category="testing/DrUM",
            description="TEST ONLY: reports every record of a DRUM_HISTORY in the prompt's history.",
            inputs=[io.Custom("DRUM_HISTORY").Input("history")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, history) -> io.NodeOutput:
        records = history.history
        report = {
            "prompts": list(records.prompts),
            "intensities": list(records.intensities),
            "timestamps": None if records.timestamps is None else list(records.timestamps),
            "ratings": None if getattr(records, "ratings", None) is None else list(records.ratings),
            "source": records.source,
        }
        return io.NodeOutput(ui={"drum_history_probe": [report]})


class ComboValue(io.ComfyNode):
    """A COMBO output: what a combo widget with a socket (newest frontend) can be linked from; no core node gives one."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMTestComboValue",
            display_name="DrUM TEST Combo Value",
            category="testing/DrUM",
            description="TEST ONLY: its text as a COMBO value, to link into a combo widget.",
            inputs=[io.String.Input("value")],
            outputs=[io.Custom("COMBO").Output()],  # io.Combo.Output declares its options list ([]) as the type
        )

    @classmethod
    def execute(cls, value: str) -> io.NodeOutput:
        return io.NodeOutput(value)


class Sink(io.ComfyNode):
    """An output node that makes its inputs run and reports what reached it."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DrUMTestSink",
            display_name="DrUM TEST Sink",
            category="testing/DrUM",
            description="TEST ONLY: runs whatever is linked into it; reports conditioning batch sizes and history lengths.",
            inputs=[
                io.Conditioning.Input("conditioning", optional=True),
                io.Custom("DRUM_HISTORY").Input("history", optional=True),
                io.Int.Input("count", optional=True, default=0),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, conditioning: list | None = None, history=None, count: int = 0) -> io.NodeOutput:
        report = {
            "batch": None if conditioning is None else [list(tokens.shape) for tokens, _ in conditioning],
            "history": None if history is None else len(history.history),
            "count": count,
        }
        return io.NodeOutput(ui={"drum_sink": [report]})


class DrUMTestExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [TinyCLIP, ConditioningProbe, HistoryProbe, ComboValue, Sink]


async def comfy_entrypoint() -> DrUMTestExtension:
    return DrUMTestExtension()
