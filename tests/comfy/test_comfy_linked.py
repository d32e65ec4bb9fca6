"""Linked widgets in-process: every node checks its inputs with the same rule at validation and at execution
(the server tier, tests/server/test_server_linked.py, queues each widget linked from a primitive)."""

import pytest
from support.comfy_env import node_module

pytestmark = pytest.mark.comfy


def widgets(node) -> list[str]:
    spec = node.GET_NODE_INFO_V1()["input"]
    return [
        name
        for section in ("required", "optional")
        for name, (io_type, *_) in spec.get(section, {}).items()
        if io_type in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
    ]


def test_every_node_is_a_checked_node(pack):
    checked = node_module("checked").CheckedNode
    plain = [node_id for node_id, node in pack.items() if not issubclass(node, checked)]
    assert not plain, f"{plain}: derive from nodes/checked.CheckedNode and call cls.check_inputs(...) first in execute"


def test_validation_skips_every_linked_input(pack):
    """ComfyUI passes None for a linked input: validation must not fail (or raise a TypeError) on it."""
    for node_id, node in pack.items():
        spec = node.GET_NODE_INFO_V1()["input"]
        names = [name for section in ("required", "optional") for name in spec.get(section, {})]
        assert node.validate_inputs(**dict.fromkeys(names)) is True, node_id


def test_widget_rule_names_the_input_and_its_bound():
    widget_error = node_module("checked").widget_error
    info = {
        "required": {"n": ["INT", {"min": 1, "max": 4}], "mode": ["COMBO", {"options": ["a", "b"]}], "file": ["COMBO", {"options": []}]},
        "optional": {"x": ["FLOAT", {"min": 0.0, "max": 1.0}]},
    }
    assert widget_error(info, {"n": 1, "mode": "b", "x": 1.0, "file": "f"}, ("file",)) is None
    assert widget_error(info, {"n": 0}) == "n = 0 is below its minimum 1"
    assert widget_error(info, {"n": 5}) == "n = 5 is above its maximum 4"
    assert widget_error(info, {"x": -0.5}) == "x = -0.5 is below its minimum 0.0"
    assert widget_error(info, {"mode": "c"}) == "mode = 'c' is not one of its options ['a', 'b']"
    assert widget_error(info, {"file": "f"}) == "file = 'f' is not one of its options []"
    assert widget_error(info, {"n": None, "mode": None, "x": None, "file": None}) is None


def test_execution_raises_what_validation_returns(pack):
    slider = pack["DrUMDegreeSlider"]
    message = slider.validate_inputs(degree=0.3, sweep=True, start=0.0, end=1.0, count=0)
    assert message == "DrUM Degree Slider: count = 0 is below its minimum 1"
    with pytest.raises(node_module("checked").DrUMInputError) as raised:
        slider.execute(0.3, True, 0.0, 1.0, 0)
    assert str(raised.value) == message
    assert slider.execute(0.3, True, 0.0, 1.0, 3).args[1] == 3


class ClipReference:
    """What a node gets for a CLIP under the secure node SDK (comfy_api ClipRef) or a process-isolation proxy:
    tokenize / encode by message, no modules."""

    kind, id = "CLIP", "ref-1"

    def tokenize(self, text, **kwargs):
        return {"l": [[(1, 1.0)]]}

    def encode(self, text, **kwargs):
        raise AssertionError("DrUM must not encode through a reference")


def test_a_clip_proxy_is_a_named_error_not_a_crash(pack):
    bridge = node_module("clip_bridge")
    adapters = node_module("io_types").AdapterChoice({"L": "auto"}, {"L": "auto"})
    history = pack["DrUMHistoryLoader"].execute("none", "a prompt\n").args[0]
    for run in (
        lambda: pack["DrUMConditioner"].execute(ClipReference(), adapters, history, "a lighthouse", 0.3),
        lambda: pack["DrUMCoresetSampler"].execute(history, ClipReference(), 0.5, 0, 2, 1, "published", 0.0),
    ):
        with pytest.raises(
            bridge.HostIsolationError, match=r"DrUM needs ComfyUI's CLIP object in its own process.*--use-process-isolation"
        ):
            run()
