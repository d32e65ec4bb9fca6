"""DrUM Taste Check in-process on a real comfy.sd.CLIP: the core's report through the node, the recommended degree as a
FLOAT, the plot, the Coreset Sampler's settings carried over, and named errors."""

import pytest
import torch
from support.comfy_env import node_module
from support.taste_models import mixing_adapter
from support.tiny_models import tiny_adapter, tiny_clip

from drum_core.defaults import SEED, K
from drum_core.history import History
from drum_core.personalizer import Personalizer
from drum_core.taste import TasteSettings, taste_check, unit_sweep

pytestmark = pytest.mark.comfy

WATERCOLOR = [
    "watercolor fox in the snow", "watercolor owl at dawn", "a watercolor pine forest", "misty watercolor lake",
    "watercolor deer in a meadow", "soft watercolor mountains", "watercolor heron by the river", "watercolor cottage garden",
    "a watercolor fox cub", "watercolor birch trees",
]  # fmt: skip
CARS = ["photo of a red sports car", "a racing motorbike on a track", "chrome engine close-up", "a vintage truck on a highway"]


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny_clip("sd1", seed=40)


@pytest.fixture(scope="module")
def adapters(pack):
    io_types = node_module("io_types")
    return io_types.AdapterChoice({"L": mixing_adapter(tiny_adapter("L", seed=41))}, {"L": "L (mixing test adapter)"})


def loaded(pack, prompts):
    return pack["DrUMHistoryLoader"].execute("none", "\n".join(prompts)).args[0]


def run(pack, clip, adapters, history, control=None, **options):
    values = {"held_out": 4, "start": 0.25, "end": 1.0, "count": 4, "max_target_loss": 0.05, **options}
    return pack["DrUMTasteCheck"].execute(clip, adapters, history, control=control, width=512, height=256, **values)


def test_the_node_gives_the_cores_report_and_degree(state, pack, sd1, adapters):
    """A profile of 3 references (the Coreset Sampler at ratio 0.5): the default 10 % keeps one prompt of the 6 left, too few
    for a themed profile to show on random encoders."""
    clip_bridge = node_module("clip_bridge")
    history = pack["DrUMCoresetSampler"].execute(loaded(pack, WATERCOLOR), sd1, 0.5, 0, K, SEED).args[0]
    out = run(pack, sd1, adapters, history, loaded(pack, CARS))
    image, degree = out.args
    assert image.shape == (1, 256, 512, 3) and image.dtype == torch.float32 and 0 <= float(image.min()) <= float(image.max()) <= 1
    shown = out.ui["drum_taste"][0]
    encoders = clip_bridge.open_clip(state, sd1).encoders
    personalizer = Personalizer("sd1", encoders, {"l": adapters.slots["L"]}, state.embeddings)
    expected = taste_check(personalizer, History(WATERCOLOR), unit_sweep(0.25, 1.0, 4), History(CARS), TasteSettings(held_out=4, ratio=0.5))
    assert degree == expected.recommended == shown["recommended"]
    assert [r["edge"] for r in shown["rows"]] == pytest.approx([r.edge for r in expected.rows], abs=1e-9)
    assert [r["degree"] for r in shown["rows"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert degree > 0 and expected.best.edge > 0  # the watercolor profile moves towards the watercolor held-out prompts
    assert "| degree |" in shown["table"] and shown["held_out"] == WATERCOLOR[::-1][:4]
    assert shown["best"]["degree"] == degree and shown["best"]["edge"] == expected.best.edge  # what the panel's summary shows


def test_without_a_control_the_shuffled_history_is_the_control(pack, sd1, adapters):
    shown = run(pack, sd1, adapters, loaded(pack, WATERCOLOR)).ui["drum_taste"][0]
    assert shown["control"] == "your history shuffled (seed 0)"
    assert shown["rows"][0]["edge"] == 0.0


def test_a_coreset_sampler_output_gives_its_full_history_and_settings(pack, sd1, adapters):
    picked = pack["DrUMCoresetSampler"].execute(loaded(pack, WATERCOLOR), sd1, 0.5, 0, 3, 7).args[0]
    assert len(picked.history) == 5
    shown = run(pack, sd1, adapters, picked).ui["drum_taste"][0]
    assert shown["held_out"] == WATERCOLOR[::-1][:4]  # the held-out prompts come from the full history
    assert shown["references"] == 3  # 50 % of the 6 prompts left
    assert shown["settings"]["k"] == 3 and shown["settings"]["coreset_seed"] == 7 and shown["settings"]["ratio"] == 0.5


def test_bad_inputs_are_named(pack, sd1, adapters):
    node = pack["DrUMTasteCheck"]
    assert "start must lie in [0, 1]" in node.validate_inputs(start=1.5, end=1.0, count=3)
    assert node.validate_inputs(start=None, end=1.0, count=3) is True  # linked: checked at execution
    with pytest.raises(ValueError, match="DrUM Taste Check: a taste check holds out 4 of 3 prompts"):
        run(pack, sd1, adapters, loaded(pack, WATERCOLOR[:3]))
    with pytest.raises(ValueError, match="DrUM Taste Check: degree sweep start"):
        run(pack, sd1, adapters, loaded(pack, WATERCOLOR), start=-0.5)
