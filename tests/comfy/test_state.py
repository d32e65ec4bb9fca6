"""The pack's state (nodes/state.py): one object owned by the extension, every part bounded, nothing kept at module level."""

import ast
import sys

import pytest
from support.comfy_env import PACKAGE, ROOT, node_module
from support.tiny_models import tiny_adapter, tiny_clip

import drum_core.history

pytestmark = pytest.mark.comfy

# module-level calls that make no state: loggers, ComfyUI's custom io types, type variables, immutable tables
STATELESS_CALLS = {"logging.getLogger", "io.Custom", "TypeVar", "frozenset", "tuple"}
MUTATING_METHODS = {
    "append",
    "add",
    "update",
    "pop",
    "popitem",
    "clear",
    "setdefault",
    "move_to_end",
    "discard",
    "remove",
    "extend",
    "insert",
}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ast.dump(node)


def module_statements(body: list[ast.stmt]):
    """The statements that run at import (into `if` and `try` blocks, not into functions or classes)."""
    for statement in body:
        yield statement
        if isinstance(statement, (ast.If, ast.Try)):
            for block in (statement.body, statement.orelse, getattr(statement, "handlers", []), getattr(statement, "finalbody", [])):
                for inner in block:
                    yield from module_statements(inner.body if isinstance(inner, ast.ExceptHandler) else [inner])


def module_state(source: str) -> list[str]:
    """What in a module's source keeps state at module level: a global made by a call (a cache object), a mutable
    container under a non-constant name, a `global` statement, or code that mutates a module-level name."""
    tree = ast.parse(source)
    found, names = [], set()
    for statement in module_statements(tree.body):
        if isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                if not isinstance(target, ast.Name):
                    continue
                names.add(target.id)
                value = statement.value
                if isinstance(value, ast.Call) and dotted(value.func) not in STATELESS_CALLS:
                    found.append(f"line {statement.lineno}: {target.id} = {dotted(value.func)}(...)")
                mutable = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
                if isinstance(value, mutable) and not target.id.isupper():
                    found.append(f"line {statement.lineno}: {target.id} is a mutable container at module level")
    for node in ast.walk(tree):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            found.append(f"line {node.lineno}: {type(node).__name__.lower()} {', '.join(node.names)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATING_METHODS:
            if isinstance(node.func.value, ast.Name) and node.func.value.id in names:
                found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}(...) mutates a module-level name")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            for target in node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]:
                if isinstance(target, (ast.Subscript, ast.Attribute)) and isinstance(target.value, ast.Name) and target.value.id in names:
                    found.append(f"line {node.lineno}: {dotted(target.value)}[...] / .attr assigned on a module-level name")
    return found


def test_no_module_of_the_nodes_keeps_state():
    """Every cache and registry of the node pack lives in the extension's DrumState: a module-level one fails here."""
    found = {path.name: module_state(path.read_text(encoding="utf-8")) for path in sorted((ROOT / "nodes").glob("*.py"))}
    assert {name: problems for name, problems in found.items() if problems} == {}


@pytest.mark.parametrize(
    "source",
    [
        "from collections import OrderedDict\n_kept = OrderedDict()\n",
        "_cache = {}\n",
        "CACHE = {}\ndef remember(key, value):\n    CACHE[key] = value\n",
        "SEEN = set()\ndef see(item):\n    SEEN.add(item)\n",
        "COUNT = 0\ndef count():\n    global COUNT\n    COUNT += 1\n",
        "from drum_core.cache import EmbeddingCache\nEMBEDDINGS = EmbeddingCache()\n",
    ],
)
def test_the_scan_sees_every_kind_of_module_state(source):
    assert module_state(source)


def test_comfyui_gets_node_classes_bound_to_one_state(pack, state):
    DrumState = node_module("state").DrumState
    assert isinstance(state, DrumState) and all(node.state() is state for node in pack.values())
    module_class = node_module("conditioner").DrUMConditioner
    assert issubclass(pack["DrUMConditioner"], module_class) and pack["DrUMConditioner"].__name__ == module_class.__name__
    with pytest.raises(RuntimeError, match="not bound to the pack's state"):
        module_class.state()
    other = sys.modules[f"{PACKAGE}.nodes"].DrUMExtension(DrumState())  # another extension: a state of its own
    assert all(node.state() is other.state is not state for node in other.nodes)


def run_conditioner(pack, clip, adapter, prompts):
    io_types = node_module("io_types")
    choice = io_types.AdapterChoice({"L": adapter}, {"L": "L (test)"})
    history = io_types.DrumHistory(drum_core.history.History(list(prompts), [1.0] * len(prompts)))
    return pack["DrUMConditioner"].execute(clip, choice, history, "a red fox", 0.3).args[0]


def test_more_histories_than_kept_leave_least_recently_used_first(pack, state):
    clip, adapter = tiny_clip("sd1", seed=70), tiny_adapter("L", seed=71)
    kept = state.personalizers.limit
    assert kept == node_module("state").PERSONALIZERS_KEPT
    histories = [(f"history {n}, first prompt", f"history {n}, second prompt") for n in range(kept + 1)]
    for prompts in histories:
        run_conditioner(pack, clip, adapter, prompts)
    assert len(state.personalizers) == kept
    assert [tuple(p.references) for p in state.personalizers.values()] == histories[1:]  # the first one left
    run_conditioner(pack, clip, adapter, histories[1])  # used again: now the most recent, so the next to leave is another
    assert [tuple(p.references) for p in state.personalizers.values()][-1] == histories[1]


def test_checked_encoders_and_handed_in_adapters_are_bounded(pack, monkeypatch):
    """A state of its own with small bounds: the host check runs again for an encoder whose record left; an adapter's
    patcher is kept in its state entry (never on the adapter), and the entries stay within the bound."""
    module, bridge, adapters = node_module("state"), node_module("clip_bridge"), node_module("adapters")
    state = module.DrumState(host_checks_kept=2, adapters_kept=2)
    checks = []
    check_host = bridge.ComfySubEncoder.check_host
    monkeypatch.setattr(bridge.ComfySubEncoder, "check_host", lambda encoder: checks.append(encoder.fingerprint) or check_host(encoder))
    clips = [tiny_clip("sd1", seed=80 + n) for n in range(3)]
    fingerprints = [bridge.open_clip(state, clip).encoders["l"].fingerprint for clip in clips]
    assert checks == fingerprints and len(set(fingerprints)) == 3
    assert len(state.host_checked) == 2 and ("sd1", fingerprints[0]) not in state.host_checked
    bridge.open_clip(state, clips[2])
    assert checks == fingerprints  # still recorded: not checked again
    bridge.open_clip(state, clips[0])
    assert checks == [*fingerprints, fingerprints[0]]  # its record had left: checked again

    handed = [tiny_adapter("L", seed=90 + n, layers=1) for n in range(3)]
    attributes = [set(vars(adapter)) for adapter in handed]
    patchers = [adapters.model_patcher(state, adapter) for adapter in handed]
    assert adapters.model_patcher(state, handed[2]) is patchers[2]  # made once per entry
    assert [patcher.model.adapter for patcher in patchers] == handed
    assert [set(vars(adapter)) for adapter in handed] == attributes  # nothing set on the adapters
    assert len(state.adapters) == 2 and [kept.adapter for kept in state.adapters.values()] == handed[1:]


def test_clear_empties_the_state(pack):
    module, bridge = node_module("state"), node_module("clip_bridge")
    state = module.DrumState()
    encoder = bridge.open_clip(state, tiny_clip("sd1", seed=95)).encoders["l"]
    state.embeddings.encode(encoder, ["a prompt"], (-1,))
    state.adapters.put("a file", module.KeptAdapter((1, 1), tiny_adapter("L", seed=96, layers=1)))
    assert len(state.host_checked) == 1 and len(state.adapters) == 1
    identities = state.identities
    state.clear()
    assert (len(state.host_checked), len(state.adapters), len(state.personalizers)) == (0, 0, 0)
    assert state.identities is not identities
    computed = state.embeddings.computed
    state.embeddings.encode(encoder, ["a prompt"], (-1,))
    assert state.embeddings.computed == computed + 1  # encoded again: nothing was left in memory
