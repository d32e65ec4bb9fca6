"""DrUM Taste Check in a real ComfyUI server: the template example_workflows/drum_taste_check.json on the tiny SD1
checkpoint (its recommended degree drives the conditioner), and its bad inputs as named node errors."""

import copy
import json

import pytest
from PIL import Image
from support.server import PromptRejected
from support.workflows import tiny_template_graph

pytestmark = pytest.mark.server


def node_id(graph: dict, class_type: str) -> str:
    return next(key for key, node in graph.items() if node["class_type"] == class_type)


def test_the_template_checks_the_taste_and_drives_the_conditioner(server):
    graph = tiny_template_graph("drum_taste_check")
    graph[node_id(graph, "DrUMTasteCheck")]["inputs"]["max_target_loss"] = 0.049  # not the template test's cached run
    entry = server.run(graph)
    assert entry.status == "success", (entry.error or {}).get("exception_message") or entry.messages
    check = entry.outputs[node_id(graph, "DrUMTasteCheck")]["drum_taste"][0]
    history = graph[node_id(graph, "DrUMHistoryLoader")]["inputs"]["text"].strip().splitlines()
    assert check["held_out"] == [line.split("\t")[0] for line in history[::-1][:2]]  # 10 % of 18, at least 2: the newest
    assert [round(r["degree"], 6) for r in check["rows"]] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert check["control"] == "your history shuffled (seed 0)" and "| degree |" in check["table"]
    assert all(abs(value) <= 100 + 1e-6 for r in check["rows"] for value in (r["target"], r["history"], r["control_history"]))
    conditioning = entry.outputs[node_id(graph, "DrUMConditioner")]["drum_conditioning"][0]
    assert conditioning["degrees"] == [check["recommended"]]  # the FLOAT output reached the conditioner's degree
    saved = entry.images(server.base / "output")
    plot = next(path for path in saved if "taste_check" in path.name)
    assert Image.open(plot).size == (1024, 512) and len(saved) == 2


def run_expecting_error(server, graph: dict) -> str:
    try:
        entry = server.run(graph)
    except PromptRejected as rejected:
        return json.dumps(rejected.body)
    assert entry.status == "error", entry
    return f"{entry.error['node_type']}: {entry.error['exception_message']}"


def test_bad_inputs_are_named_node_errors(server):
    good = tiny_template_graph("drum_taste_check")
    check = node_id(good, "DrUMTasteCheck")
    cases = {
        "too few prompts": ({"held_out": 18}, ["DrUMTasteCheck", "holds out 18 of 18 prompts"]),
        "reversed sweep out of range": ({"start": 0.5, "end": 1.0, "count": 0}, ["count"]),
    }
    for case, (inputs, expected) in cases.items():
        graph = copy.deepcopy(good)
        graph[check]["inputs"].update(inputs)
        message = run_expecting_error(server, graph)
        assert all(part in message for part in expected), (case, message)
        assert server.alive(), case
