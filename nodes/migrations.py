"""Migrations: the registry of deliberate changes to a node's schema that saved workflows must survive.

tests/comfy/test_node_schemas.py compares every node's schema with the checked-in snapshot
(tests/data/node_schemas.json) and fails on any change that would break a saved workflow (a node,
input or output removed or renamed, a type changed, a default removed, outputs reordered, a widget
moved...) unless a Migration below names that node and field. Adding a node, or an input with a
default after the existing widgets, needs no migration: regenerate the snapshot (`make node-schemas`).
See docs/comfyui.md "Old workflows keep loading".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NODE = ""  # Migration.field for a change of the node itself (removed, renamed)


@dataclass(frozen=True)
class Migration:
    """One deliberate, breaking schema change: `node_id`'s `field` (an input name, "output <index>", or NODE).

    `upgrade` rewrites the API-format `inputs` of an old node into the new schema's (None: the change needs no
    rewrite, e.g. a widget's range widened in a way the check cannot tell apart from a narrowing)."""

    node_id: str
    field: str
    note: str
    upgrade: Callable[[dict], dict] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "DrUMHistoryMix",
        "output 0",
        "The history output became a list (the sweep's mixes, one run of the nodes after it each). A saved workflow "
        "without a sweep gets a list of one history, which every node after it treats as that history: nothing to rewrite.",
    ),
)


def migration_for(node_id: str, field: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> Migration | None:
    """The migration registered for `node_id`'s `field`, or None."""
    return next((m for m in migrations if m.node_id == node_id and m.field == field), None)


def upgrade_prompt(prompt: dict, migrations: tuple[Migration, ...] = MIGRATIONS) -> dict:
    """An API-format prompt ({id: {"class_type", "inputs"}}) with every registered upgrade applied to its nodes."""
    upgraded = {}
    for node, entry in prompt.items():
        entry = dict(entry)
        for migration in migrations:
            if migration.upgrade is not None and entry.get("class_type") == migration.node_id:
                entry["inputs"] = migration.upgrade(dict(entry.get("inputs", {})))
        upgraded[node] = entry
    return upgraded
