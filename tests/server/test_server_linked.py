"""Every widget of every DrUM node fed by a link (the newest frontend puts a socket on each widget).

ComfyUI passes None to validate_inputs for a linked input and never checks a linked value against the
widget's min / max / options. Each node's graph below runs once with EVERY widget linked from a
primitive node (PrimitiveInt / Float / String / Boolean, or the TEST-ONLY DrUMTestComboValue for a
combo: no core node outputs COMBO), then once per invalid value: linked, it must stop the run at
execution with the node's named error (DrUMInputError); as a constant, validation must reject it with
the SAME message.
"""

import copy

import pytest
from support.server import PromptRejected

pytestmark = pytest.mark.server

HISTORY = "watercolor of a harbour\t2\nink sketch of a fox\t3\noil painting of a storm at sea\t1\nmisty pine forest, soft light\t4\n"
PRIMITIVES = {
    "INT": "PrimitiveInt",
    "FLOAT": "PrimitiveFloat",
    "STRING": "PrimitiveString",
    "BOOLEAN": "PrimitiveBoolean",
    "COMBO": "DrUMTestComboValue",
}
BASE = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
    "2": {"class_type": "DrUMHistoryLoader", "inputs": {"file": "none", "text": HISTORY}},
    "3": {"class_type": "DrUMHistorySplit", "inputs": {"history": ["2", 0], "threshold": 1.5}},
    "4": {  # a sweep of one mix: a list of one history, the same downstream as mix 0.4
        "class_type": "DrUMHistoryMix",
        "inputs": {"history_a": ["3", 0], "history_b": ["2", 0], "mix": 0.7, "sweep": True, "start": 0.4, "end": 1.0, "count": 1},
    },
    "5": {
        "class_type": "DrUMCoresetSampler",
        "inputs": {
            "history": ["4", 0],
            "clip": ["1", 1],
            "ratio": 0.5,
            "max_count": 3,
            "k": 2,
            "seed": 7,
            "mode": "diverse",
            "half_life_days": 0.0,
        },
    },
    "6": {"class_type": "DrUMPeCALoader", "inputs": {"L": "L.safetensors", "H": "auto", "bigG": "none", "T5": "auto"}},
    "7": {"class_type": "DrUMDegreeSlider", "inputs": {"degree": 0.3, "sweep": True, "start": 0.1, "end": 0.9, "count": 3}},
    "8": {
        "class_type": "DrUMConditioner",
        "inputs": {
            "clip": ["1", 1],
            "adapters": ["6", 0],
            "history": ["5", 0],
            "text": "a lighthouse on a cliff at dusk",
            "degree": 0.5,
            "degrees": ["7", 0],
            "relevant": 1,
            "start_percent": 0.0,
            "end_percent": 0.8,
        },
    },
    "9": {"class_type": "DrUMProfileSave", "inputs": {"history": ["5", 0], "name": "linked/saved"}},
    "10": {"class_type": "DrUMProfilePreview", "inputs": {"history": ["5", 0], "width": 256, "height": 264}},
    "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    "12": {"class_type": "DrUMProfileLoad", "inputs": {"file": "seed.safetensors", "clip": ["1", 1]}},
    "13": {"class_type": "DrUMTestSink", "inputs": {"conditioning": ["8", 0], "history": ["12", 0], "count": ["7", 1]}},
    "14": {
        "class_type": "DrUMTasteCheck",
        "inputs": {
            "clip": ["1", 1],
            "adapters": ["6", 0],
            "history": ["2", 0],
            "held_out": 2,
            "start": 0.5,
            "end": 1.0,
            "count": 2,
            "max_target_loss": 0.1,
            "width": 256,
            "height": 256,
        },
    },
    "15": {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}},
    "16": {
        "class_type": "DrUMOutputsHistory",
        "inputs": {"folder": "(all outputs)", "since_days": 30.0, "dedupe": True, "include_queue": False},
    },
    "17": {"class_type": "DrUMTestSink", "inputs": {"history": ["16", 0]}},
}
INVALID = {  # case: ({(node, input): value}, node that must fail, words of its message)
    "history file missing": ({("2", "file"): "missing.txt", ("2", "text"): ""}, "2", "not found in ComfyUI's input folder"),
    "split threshold": ({("3", "threshold"): -1.0}, "3", "threshold = -1.0 is below its minimum"),
    "mix": ({("4", "mix"): 1.5}, "4", "mix = 1.5 is above its maximum"),
    "mix start": ({("4", "start"): -0.5}, "4", "start = -0.5 is below its minimum"),
    "mix end": ({("4", "end"): 1.5}, "4", "end = 1.5 is above its maximum"),
    "mix count": ({("4", "count"): 17}, "4", "count = 17 is above its maximum 16"),
    "coreset ratio": ({("5", "ratio"): 0.0}, "5", "ratio = 0.0 is below its minimum"),
    "coreset max_count": ({("5", "max_count"): -1}, "5", "max_count = -1 is below its minimum"),
    "coreset k": ({("5", "k"): 0}, "5", "k = 0 is below its minimum"),
    "coreset seed": ({("5", "seed"): -1}, "5", "seed = -1 is below its minimum"),
    "coreset mode": ({("5", "mode"): "bogus"}, "5", "mode = 'bogus' is not one of its options"),
    "coreset half-life": ({("5", "half_life_days"): -1.0}, "5", "half_life_days = -1.0 is below its minimum"),
    "adapter of another slot": ({("6", "L"): "bigG.safetensors"}, "6", "L slot: PeCA adapter 'bigG.safetensors' is made for"),
    "adapter missing": ({("6", "T5"): "gone.safetensors"}, "6", "T5 slot: PeCA adapter 'gone.safetensors' not found"),
    "slider degree": ({("7", "degree"): 2.0}, "7", "degree = 2.0 is above its maximum"),
    "slider start": ({("7", "start"): -0.5}, "7", "start = -0.5 is below its minimum"),
    "slider end": ({("7", "end"): 1.5}, "7", "end = 1.5 is above its maximum"),
    "slider count": ({("7", "count"): 0}, "7", "count = 0 is below its minimum"),
    "conditioner degree": ({("8", "degree"): 1.5}, "8", "degree = 1.5 is above its maximum"),
    "conditioner relevant": ({("8", "relevant"): -1}, "8", "relevant = -1 is below its minimum"),
    "empty range": ({("8", "start_percent"): 0.8}, "8", "start_percent (0.8) must be below end_percent (0.8)"),
    "range outside [0, 1]": ({("8", "end_percent"): 1.5}, "8", "must lie in [0, 1]"),
    "profile name": ({("9", "name"): "../outside"}, "9", "'../outside.safetensors' must be a name inside the drum_profiles folder"),
    "preview width": ({("10", "width"): 100}, "10", "width = 100 is below its minimum"),
    "preview height": ({("10", "height"): 5000}, "10", "height = 5000 is above its maximum"),
    "profile missing": ({("12", "file"): "gone.safetensors"}, "12", "DrUM profile 'gone.safetensors' not found"),
    "taste held_out": ({("14", "held_out"): -1}, "14", "held_out = -1 is below its minimum"),
    "taste sweep": ({("14", "start"): 1.5}, "14", "start must lie in [0, 1]"),
    "taste count": ({("14", "count"): 0}, "14", "a degree sweep needs count >= 1, got 0"),
    "taste target loss": ({("14", "max_target_loss"): 2.0}, "14", "max_target_loss = 2.0 is above its maximum"),
    "taste width": ({("14", "width"): 100}, "14", "width = 100 is below its minimum"),
    "outputs folder": ({("16", "folder"): "../elsewhere"}, "16", "folder '../elsewhere'"),
    "outputs since": ({("16", "since_days"): -1.0}, "16", "since_days = -1.0 is below its minimum"),
}


@pytest.fixture(scope="module")
def info(server):
    """/object_info, with the seed profile that node 12 loads saved first."""
    saved = server.run(
        {
            "1": BASE["1"],
            "2": BASE["2"],
            "9": {"class_type": "DrUMProfileSave", "inputs": {"history": ["2", 0], "name": "seed", "clip": ["1", 1]}},
        }
    )
    assert saved.status == "success", saved.error or saved.messages
    every = server.object_info()
    assert {"DrUMTestComboValue", "DrUMTestSink"} <= set(every), server.log_tail()
    return every


def widget_type(info: dict, class_type: str, name: str) -> str:
    spec = {**info[class_type]["input"].get("required", {}), **info[class_type]["input"].get("optional", {})}[name]
    return spec[0] if isinstance(spec[0], str) else "COMBO"


def graph(info: dict, changes: dict | None = None, linked: bool = True) -> dict:
    """BASE with `changes`; `linked`: every widget of every DrUM node fed by a primitive node instead of a constant."""
    built = copy.deepcopy(BASE)
    for (key, name), value in (changes or {}).items():
        built[key]["inputs"][name] = value
    if not linked:
        return built
    for key, node in list(built.items()):
        if not node["class_type"].startswith("DrUM") or node["class_type"].startswith("DrUMTest"):
            continue
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                continue
            primitive = f"{key}.{name}"
            built[primitive] = {"class_type": PRIMITIVES[widget_type(info, node["class_type"], name)], "inputs": {"value": value}}
            node["inputs"][name] = [primitive, 0]
    return built


def test_every_drum_node_and_widget_is_covered(info):
    nodes = {name for name, spec in info.items() if spec["category"] == "conditioning/DrUM"}
    assert nodes == {node["class_type"] for node in BASE.values() if node["class_type"].startswith("DrUM")} - {"DrUMTestSink"}, (
        "add the new node to BASE (and its invalid values to INVALID)"
    )
    for node in BASE.values():
        if node["class_type"] in nodes:
            spec = info[node["class_type"]]["input"]
            names = {*spec.get("required", {}), *spec.get("optional", {})}
            widgets = {name for name in names if widget_type(info, node["class_type"], name) in PRIMITIVES}
            assert widgets and widgets <= set(node["inputs"]), node["class_type"]  # every widget is in BASE


def test_every_widget_linked_runs(server, info):
    built = graph(info)
    widgets = [(k, n) for k, node in BASE.items() if node["class_type"].startswith("DrUMTest") is False for n, v in node["inputs"].items()]
    widgets = [(k, n) for k, n in widgets if BASE[k]["class_type"].startswith("DrUM") and not isinstance(BASE[k]["inputs"][n], list)]
    assert sorted(key for key in built if "." in key) == sorted(f"{k}.{n}" for k, n in widgets)  # every widget is a link now
    assert all(isinstance(built[k]["inputs"][n], list) for k, n in widgets)
    entry = server.run(built)
    assert entry.status == "success", entry.error or entry.messages
    (sink,) = entry.outputs["13"]["drum_sink"]
    assert sink["count"] == 3 and len(sink["batch"]) == 2  # sweep of 3 degrees; range 0..0.8 personalized + 0.8..1 plain
    assert [shape[0] for shape in sink["batch"]] == [3, 3]
    assert entry.outputs["9"]["drum_profile"][0]["file"] == "linked/saved.safetensors"
    assert (server.base / "models" / "drum_profiles" / "linked" / "saved.safetensors").is_file()
    assert len(entry.outputs["11"]["images"]) == 1
    assert entry.outputs["17"]["drum_sink"][0]["history"] is not None
    assert len(entry.outputs["15"]["images"]) == 1 and entry.outputs["14"]["drum_taste"][0]["held_out"]


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_linked_value_is_the_named_error_validation_gives(server, info, case):
    changes, failing, words = INVALID[case]
    name = info[BASE[failing]["class_type"]]["display_name"]
    entry = server.run(graph(info, changes))
    assert entry.status == "error" and entry.error is not None, entry.messages
    assert entry.error["node_id"] == failing, entry.error
    assert entry.error["exception_type"].endswith("DrUMInputError"), entry.error
    message = entry.error["exception_message"].strip()  # ComfyUI ends it with a newline
    assert message.startswith(f"{name}: ") and words in message, message
    with pytest.raises(PromptRejected) as rejected:
        server.run(graph(info, changes, linked=False))
    details = [error["details"] for error in rejected.value.body["node_errors"][failing]["errors"]]
    assert any(detail.endswith(f" - {message}") for detail in details), (details, message)
