"""The pack's node schemas as saved workflows see them, and the rule for what may change.

`make node-schemas` (= `.venv/bin/python tests/support/node_schemas.py`) rewrites tests/data/node_schemas.json
from the V3 schemas (ComfyUI's own V1 view of them, what /object_info serves). Folder-listing combos are
built over EMPTY folders so the snapshot holds only the options the code declares.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "tests" / "data" / "node_schemas.json"
REGENERATE = "make node-schemas"
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")  # inputs stored positionally in a workflow's widgets_values
KEPT = ("default", "min", "max", "options", "multiselect")


@contextlib.contextmanager
def empty_folders(names: tuple[str, ...]):
    """ComfyUI's input folder and the model folders `names` pointed at empty temporary folders."""
    import folder_paths

    with tempfile.TemporaryDirectory() as empty:
        previous_input = folder_paths.get_input_directory()
        previous = {name: folder_paths.folder_names_and_paths[name] for name in names}
        folder_paths.set_input_directory(empty)
        for name in names:
            folder_paths.folder_names_and_paths[name] = ([empty], previous[name][1])
            folder_paths.filename_list_cache.pop(name, None)
        try:
            yield
        finally:
            folder_paths.set_input_directory(previous_input)
            for name in names:
                folder_paths.folder_names_and_paths[name] = previous[name]
                folder_paths.filename_list_cache.pop(name, None)


def node_schema(node) -> dict:
    """One node's saved-workflow contract: inputs in order (section, type, default, range, options), outputs in order."""
    info = node.GET_NODE_INFO_V1()
    inputs = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            io_type, options = spec[0], spec[1] if len(spec) > 1 else {}
            entry = {"name": name, "section": section, "type": io_type}
            entry.update({key: options[key] for key in KEPT if key in options})
            inputs.append(entry)
    outputs = [
        {"type": io_type, "name": name, "is_list": is_list}
        for io_type, name, is_list in zip(info["output"], info["output_name"], info["output_is_list"])
    ]
    return {"inputs": inputs, "outputs": outputs, "output_node": bool(info["output_node"])}


def current_schemas(pack: dict) -> dict:
    """{node_id: node_schema} of every node of the loaded pack, folders empty."""
    import folder_paths

    from_pack = tuple(name for name in ("drum", "drum_profiles") if name in folder_paths.folder_names_and_paths)
    with empty_folders(from_pack):
        return {node_id: node_schema(pack[node_id]) for node_id in sorted(pack)}


def breaks(old: dict, new: dict, migrations=()) -> list[str]:
    """What in `new` would break a workflow saved against `old`, less what `migrations` register (nodes.migrations)."""
    found = []

    def report(node_id: str, field: str, message: str) -> None:
        if not any(m.node_id == node_id and m.field == field for m in migrations):
            found.append(f"{node_id}{'.' + field if field else ''}: {message}")

    for node_id, before in old.items():
        after = new.get(node_id)
        if after is None:
            report(node_id, "", "node removed or renamed (saved workflows name it by its id)")
            continue
        now = {entry["name"]: entry for entry in after["inputs"]}
        for entry in before["inputs"]:
            name, current = entry["name"], now.get(entry["name"])
            if current is None:
                report(node_id, name, "input removed or renamed")
                continue
            if current["type"] != entry["type"]:
                report(node_id, name, f"type changed {entry['type']} -> {current['type']}")
            if "default" in entry and "default" not in current:
                report(node_id, name, "default removed (old API prompts and new widgets relied on it)")
            if entry["section"] == "optional" and current["section"] == "required" and "default" not in current:
                report(node_id, name, "optional input became required without a default")
            if "min" in entry and "min" in current and current["min"] > entry["min"]:
                report(node_id, name, f"min raised {entry['min']} -> {current['min']} (saved values below it now fail validation)")
            if "max" in entry and "max" in current and current["max"] < entry["max"]:
                report(node_id, name, f"max lowered {entry['max']} -> {current['max']} (saved values above it now fail validation)")
            lost = [o for o in entry.get("options", []) if o not in current.get("options", [])]
            if lost:
                report(node_id, name, f"options removed {lost} (saved choices no longer valid)")
        known = {entry["name"] for entry in before["inputs"]}
        for entry in after["inputs"]:
            if entry["name"] not in known and entry["section"] == "required" and "default" not in entry:
                report(node_id, entry["name"], "new required input without a default (old workflows lack it)")
        old_widgets = [e["name"] for e in before["inputs"] if e["type"] in WIDGETS]
        new_widgets = [e["name"] for e in after["inputs"] if e["type"] in WIDGETS]
        kept = [name for name in old_widgets if name in new_widgets]
        if new_widgets[: len(kept)] != kept:
            report(
                node_id,
                "widgets",
                f"widgets {old_widgets} -> {new_widgets}: moved, or new ones placed before old ones (widgets_values are positional: add new widgets last)",
            )
        for index, output in enumerate(before["outputs"]):
            field = f"output {index}"
            if index >= len(after["outputs"]):
                report(node_id, field, f"output {output['name']} ({output['type']}) removed (links name outputs by index)")
                continue
            current = after["outputs"][index]
            if current["type"] != output["type"] or current["is_list"] != output["is_list"]:
                report(
                    node_id,
                    field,
                    f"output changed {output['type']} -> {current['type']} (reordered or retyped: links name outputs by index)",
                )
    return found


def main() -> None:
    """Rewrite the snapshot from the pack in this tree."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(ROOT / "tests"))
    from support import comfy_env

    SNAPSHOT.write_text(json.dumps(current_schemas(comfy_env.load_pack()), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {SNAPSHOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
