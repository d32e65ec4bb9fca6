"""UI-format (litegraph) workflows <-> API-format graphs, using a server's /object_info.

    python tests/support/workflows.py --object-info info.json   # writes example_workflows/<name>.json
                                                                 # from example_workflows/api/<name>.json

The committed UI files are made from the API copies; the server tier converts them back and
asserts equality, so the two formats never drift apart. Widget values follow /object_info's
input order; an INT with control_after_generate (a seed) carries one extra value ("fixed").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_WIDTH, ROW_HEIGHT, NODE_HEIGHT = 420, 480, 440  # room for the web extension's panels


def ordered_inputs(spec: dict) -> list[tuple[str, str, dict]]:
    """(name, type, options) of a node's inputs in the order the UI shows them."""
    order = spec.get("input_order", {})
    result = []
    for section in ("required", "optional"):
        inputs = spec["input"].get(section, {})
        for name in order.get(section, list(inputs)):
            kind, *options = inputs[name]
            result.append((name, "COMBO" if isinstance(kind, list) else kind, options[0] if options else {}))
    return result


def is_widget(kind: str, options: dict) -> bool:
    return kind in WIDGET_TYPES and not options.get("forceInput")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API graph {id: {class_type, inputs}} of a UI workflow."""
    links = {link[0]: link for link in workflow["links"]}
    graph = {}
    for node in workflow["nodes"]:
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values", []))
        inputs = {}
        for name, kind, options in ordered_inputs(object_info[node["type"]]):
            if is_widget(kind, options):
                value = next(values)
                if options.get("control_after_generate"):
                    next(values)
                inputs[name] = value
            if name in linked:
                _id, origin, slot, *_ = links[linked[name]]
                inputs[name] = [str(origin), slot]
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


def _depths(graph: dict) -> dict[str, int]:
    """Column of each node: 1 + the deepest node feeding it."""
    depths: dict[str, int] = {}

    def depth(key: str) -> int:
        if key not in depths:
            sources = [v[0] for v in graph[key]["inputs"].values() if isinstance(v, list)]
            depths[key] = 1 + max((depth(s) for s in sources), default=-1)
        return depths[key]

    for key in graph:
        depth(key)
    return depths


def api_to_ui(graph: dict, object_info: dict) -> dict:
    """A UI workflow (nodes laid out in columns by depth) for an API graph."""
    depths = _depths(graph)
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs: dict[tuple[str, int], list[int]] = {}
    for key, node in graph.items():
        spec = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, kind, options in ordered_inputs(spec):
            value = node["inputs"].get(name)
            linked = isinstance(value, list)
            if is_widget(kind, options):
                widgets.append(options.get("default") if linked or value is None else value)
                if options.get("control_after_generate"):
                    widgets.append("fixed")
            if linked:
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(key), len(inputs), kind])
                outputs.setdefault((value[0], value[1]), []).append(link_id)
                entry = {"name": name, "type": kind, "link": link_id}
                if is_widget(kind, options):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif not is_widget(kind, options) and name in spec["input"].get("required", {}):
                inputs.append({"name": name, "type": kind, "link": None})
        column = depths[key]
        row = rows.get(column, 0)
        rows[column] = row + 1
        nodes.append(
            {
                "id": int(key),
                "type": node["class_type"],
                "pos": [40 + COLUMN_WIDTH * column, 40 + ROW_HEIGHT * row],
                "size": [380, NODE_HEIGHT],
                "flags": {},
                "order": 0,
                "mode": 0,
                "inputs": inputs,
                "outputs": [],
                "properties": {"Node name for S&R": node["class_type"]},
                "widgets_values": widgets,
            }
        )
    for node in nodes:
        spec = object_info[node["type"]]
        names = spec.get("output_name", spec["output"])
        node["outputs"] = [
            {"name": name, "type": kind, "links": outputs.get((str(node["id"]), slot), []), "slot_index": slot}
            for slot, (name, kind) in enumerate(zip(names, spec["output"]))
        ]
    for order, key in enumerate(sorted(graph, key=lambda k: (depths[k], int(k)))):
        next(n for n in nodes if n["id"] == int(key))["order"] = order
    return {
        "last_node_id": max(int(k) for k in graph),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="write example_workflows/<name>.json from the API copies")
    parser.add_argument("--object-info", required=True, help="a saved GET /object_info answer")
    parser.add_argument("--workflows", default=str(Path(__file__).resolve().parents[2] / "example_workflows"))
    args = parser.parse_args()
    object_info = json.loads(Path(args.object_info).read_text())
    folder = Path(args.workflows)
    for api in sorted((folder / "api").glob("*.json")):
        ui = api_to_ui(json.loads(api.read_text()), object_info)
        (folder / api.name).write_text(json.dumps(ui, indent=1) + "\n")


if __name__ == "__main__":
    main()
