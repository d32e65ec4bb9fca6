"""Saved workflows keep loading: every node's schema against the checked-in snapshot (nodes/migrations.py)."""

import copy
import json

import pytest
from support.comfy_env import node_module
from support.node_schemas import REGENERATE, SNAPSHOT, breaks, current_schemas

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def snapshot():
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def current(pack):
    return current_schemas(pack)


def test_no_change_breaks_a_saved_workflow(pack, snapshot, current):
    found = breaks(snapshot, current, node_module("migrations").MIGRATIONS)
    assert not found, (
        "these changes break workflows saved against tests/data/node_schemas.json:\n  "
        + "\n  ".join(found)
        + "\nKeep the old name/type/order, or register a Migration in nodes/migrations.py; then run `"
        + REGENERATE
        + "`."
    )


def test_snapshot_is_current(snapshot, current):
    """Additions (a node, an input with a default) are accepted by regenerating the snapshot, never by editing the rule."""
    assert current == snapshot, f"the node schemas changed compatibly: run `{REGENERATE}` and commit tests/data/node_schemas.json"


def test_snapshot_covers_every_node(pack, snapshot):
    assert sorted(snapshot) == sorted(pack)
    assert snapshot["DrUMHistoryLoader"]["inputs"][0] == {
        "name": "file",
        "section": "required",
        "type": "COMBO",
        "default": "none",
        "multiselect": False,
        "options": ["none"],  # folder files are not part of the contract: the snapshot is built over empty folders
    }


def mutated(snapshot, change):
    new = copy.deepcopy(snapshot)
    change(new)
    return new


def inputs(schema, node):
    return {entry["name"]: entry for entry in schema[node]["inputs"]}


BREAKING = {
    "node removed": (lambda s: s.pop("DrUMDegreeSlider"), "DrUMDegreeSlider: node removed"),
    "input renamed": (
        lambda s: inputs(s, "DrUMConditioner")["degree"].update(name="alpha"),
        "DrUMConditioner.degree: input removed",
        "DrUMConditioner.widgets: widgets",
    ),
    "type changed": (lambda s: inputs(s, "DrUMConditioner")["relevant"].update(type="FLOAT"), "DrUMConditioner.relevant: type changed"),
    "default removed": (lambda s: inputs(s, "DrUMConditioner")["degree"].pop("default"), "DrUMConditioner.degree: default removed"),
    "min raised": (lambda s: inputs(s, "DrUMConditioner")["degree"].update(min=0.1), "DrUMConditioner.degree: min raised"),
    "max lowered": (lambda s: inputs(s, "DrUMConditioner")["degree"].update(max=0.9), "DrUMConditioner.degree: max lowered"),
    "option removed": (lambda s: inputs(s, "DrUMPeCALoader")["L"]["options"].remove("auto"), "DrUMPeCALoader.L: options removed"),
    "made required": (
        lambda s: [inputs(s, "DrUMConditioner")["conditioning"].update(section="required")],
        "DrUMConditioner.conditioning: optional input became required",
    ),
    "new required socket": (
        lambda s: s["DrUMConditioner"]["inputs"].append({"name": "mask", "section": "required", "type": "MASK"}),
        "DrUMConditioner.mask: new required input without a default",
    ),
    "widgets reordered": (
        lambda s: s["DrUMDegreeSlider"]["inputs"].insert(0, s["DrUMDegreeSlider"]["inputs"].pop(1)),
        "DrUMDegreeSlider.widgets: widgets",
    ),
    "widget added first": (
        lambda s: s["DrUMDegreeSlider"]["inputs"].insert(0, {"name": "new", "section": "required", "type": "INT", "default": 1}),
        "DrUMDegreeSlider.widgets: widgets",
    ),
    "outputs reordered": (
        lambda s: s["DrUMDegreeSlider"]["outputs"].reverse(),
        "DrUMDegreeSlider.output 0: output changed",
        "DrUMDegreeSlider.output 1: output changed",
    ),
    "output removed": (lambda s: s["DrUMDegreeSlider"]["outputs"].pop(), "DrUMDegreeSlider.output 1: output batch_size (INT) removed"),
    "output made a list": (lambda s: s["DrUMHistoryLoader"]["outputs"][0].update(is_list=True), "DrUMHistoryLoader.output 0"),
}


@pytest.mark.parametrize("case", sorted(BREAKING))
def test_each_breaking_change_is_caught_unless_migrated(snapshot, case):
    change, *expected = BREAKING[case]
    found = breaks(snapshot, mutated(snapshot, change))
    assert len(found) == len(expected) and all(f.startswith(e) for f, e in zip(found, expected)), found
    fields = [e.partition(":")[0].partition(".") for e in expected]
    migrations = tuple(node_module("migrations").Migration(node_id, field, "test") for node_id, _, field in fields)
    assert breaks(snapshot, mutated(snapshot, change), migrations) == []
    assert len(breaks(snapshot, mutated(snapshot, change), migrations[1:])) == 1  # each break needs its own migration


COMPATIBLE = {
    "node added": lambda s: s.update(DrUMNew={"inputs": [], "outputs": [], "output_node": False}),
    "widget with a default added last": lambda s: s["DrUMDegreeSlider"]["inputs"].append(
        {"name": "new", "section": "required", "type": "INT", "default": 1}
    ),
    "optional socket added": lambda s: s["DrUMConditioner"]["inputs"].append({"name": "mask", "section": "optional", "type": "MASK"}),
    "output appended": lambda s: s["DrUMHistoryLoader"]["outputs"].append({"type": "INT", "name": "count", "is_list": False}),
    "range widened, option added, tooltip-free rename of an output": lambda s: [
        inputs(s, "DrUMConditioner")["degree"].update(min=-1.0, max=2.0),
        inputs(s, "DrUMPeCALoader")["L"]["options"].append("extra"),
        s["DrUMHistoryLoader"]["outputs"][0].update(name="prompts"),
    ],
}


@pytest.mark.parametrize("case", sorted(COMPATIBLE))
def test_compatible_changes_pass(snapshot, case):
    assert breaks(snapshot, mutated(snapshot, COMPATIBLE[case])) == []


def test_upgrade_prompt_applies_registered_migrations(pack):
    migrations = node_module("migrations")
    rename = migrations.Migration(
        "DrUMConditioner", "alpha", "renamed to degree", upgrade=lambda i: {("degree" if k == "alpha" else k): v for k, v in i.items()}
    )
    prompt = {
        "1": {"class_type": "DrUMConditioner", "inputs": {"alpha": 0.4, "text": "x"}},
        "2": {"class_type": "X", "inputs": {"alpha": 1}},
    }
    upgraded = migrations.upgrade_prompt(prompt, (rename,))
    assert upgraded == {"1": {"class_type": "DrUMConditioner", "inputs": {"degree": 0.4, "text": "x"}}, "2": prompt["2"]}
    assert prompt["1"]["inputs"] == {"alpha": 0.4, "text": "x"}  # the caller's prompt is not modified
    assert migrations.migration_for("DrUMConditioner", "alpha", (rename,)) is rename
