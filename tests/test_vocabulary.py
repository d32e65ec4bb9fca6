"""One name per concept from the node input to the kernel (docs/api.md, "Names"):

    degree      the personalization degree alpha     never `alpha` / `alphas`
    max_count   the bound on the number of references never `max_references`
    intensities the preference intensities p_i       never `weights` (which means model weights only)
    ratings     what the user rated

An AST scan of drum_core/ and nodes/ fails on a name that binds one of the retired words: a function
or parameter name, an assigned name or attribute, a keyword argument, an import alias, a dict key or a
subscript string. Reading an attribute another library defines (ComfyUI's `adapter.weights`) is not a
binding, and `weight` / `weights_fingerprint` / the `drum_core.weights` module (model weights) are
other words."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

from drum_core import PeCA, Personalizer, defaults
from drum_core.cli import build_parser
from drum_core.coreset import DEFAULT_MAX_COUNT, coreset_sample, sample_count
from drum_core.diffusers_pipelines import PipelinePersonalizer, personalize_pipeline, profile_history
from drum_core.history import History
from drum_core.taste import TasteSettings

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("drum_core", "nodes")
RETIRED = {
    "alpha": "degree",
    "alphas": "degrees",
    "max_references": "max_count",
    "weights": "intensities",
    "reweighted": "with_intensities",
}


def retired_word(name: str) -> str | None:
    """The retired word `name` is made of, or None. Parts are snake_case words, case folded: `row_alphas`,
    `ALPHA`, `recency_weights`, `DEFAULT_MAX_REFERENCES` are retired; `weight`, `weights_fingerprint` are not
    (a trailing `weights` is p_i's old name, a leading one a model's weights), nor another library's word
    with alpha inside (diffusers' `set_alpha_to_one`)."""
    lowered = name.lower().strip("_")
    if "max_references" in lowered:
        return "max_references"
    parts = [p for p in lowered.split("_") if p]
    for word in ("alpha", "alphas", "reweighted"):
        if parts and word in (parts[0], parts[-1]):
            return word
    return "weights" if parts and parts[-1] == "weights" else None


def bound_names(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, what, name) for every name the module binds or spells as a key."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append((node.lineno, "definition", node.name))
        elif isinstance(node, ast.arg):
            found.append((node.lineno, "parameter", node.arg))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.append((node.lineno, "variable", node.id))
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            found.append((node.lineno, "attribute", node.attr))
        elif isinstance(node, ast.keyword) and node.arg is not None:
            found.append((node.value.lineno, "keyword argument", node.arg))
        elif isinstance(node, ast.alias) and node.asname is not None:
            found.append((node.lineno, "import alias", node.asname))
        elif isinstance(node, ast.Dict):
            found += [(k.lineno, "dict key", k.value) for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            found.append((node.lineno, "subscript", node.slice.value))
    return found


def violations(source: str, where: str) -> list[str]:
    out = []
    for line, what, name in bound_names(ast.parse(source)):
        word = retired_word(name)
        if word is not None:
            out.append(f"{where}:{line}: {what} '{name}' uses '{word}'; the name is '{RETIRED[word]}'")
    return out


def test_vocabulary_scanner_catches_each_retired_form():
    caught = {
        "def f(alpha=0.3): pass": "parameter 'alpha'",
        "def f(*, max_references=64): pass": "parameter 'max_references'",
        "x = History(prompts, weights=[1.0])": "keyword argument 'weights'",
        "self.weights = p": "attribute 'weights'",
        "row_alphas = [a for a in d]": "variable 'row_alphas'",
        "ALPHA = 0.3": "variable 'ALPHA'",
        "DEFAULT_MAX_REFERENCES = 64": "variable 'DEFAULT_MAX_REFERENCES'",
        "def recency_weights(h, days): pass": "definition 'recency_weights'",
        "def reweighted(self, p): pass": "definition 'reweighted'",
        "settings = {'max_references': 4}": "dict key 'max_references'",
        "v = found['alpha']": "subscript 'alpha'",
        "from x import y as weights": "import alias 'weights'",
        "class S:\n    reference_weights: list": "variable 'reference_weights'",
    }
    for source, expected in caught.items():
        found = violations(source, "<mutant>")
        assert len(found) == 1 and expected in found[0], (source, found)


def test_vocabulary_scanner_leaves_model_weights_alone():
    allowed = """
from .weights import load_adapters
from drum_core import weights
weight = torch.cat([self.key.weight, self.value.weight])
key = weights_fingerprint(module.state_dict().items())
class WeightsFingerprint: pass
if isinstance(getattr(value, "weights", None), list):
    digest(value.weights)
intensities = history.intensities
degree, degrees, max_count, ratings = 0.3, [0.3], 64, None
scheduler = DDIMScheduler(set_alpha_to_one=False)
"""
    assert violations(allowed, "<allowed>") == []


def test_drum_core_and_nodes_use_one_name_per_concept():
    files = sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))
    assert len(files) > 40  # the whole core and every node module were read
    found = [v for path in files for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == [], "\n".join(found)


def test_node_inputs_keep_their_name_down_to_the_core():
    """The Conditioner's `degree` and the Coreset Sampler's `max_count` are the names the core's public API,
    the diffusers pipelines and the CLI use; no node input spells a retired word."""
    schemas = json.loads((ROOT / "tests/data/node_schemas.json").read_text(encoding="utf-8"))
    inputs = {node: {i["name"] for i in schema["inputs"]} for node, schema in schemas.items()}
    assert {"degree", "degrees"} <= inputs["DrUMConditioner"] and "max_count" in inputs["DrUMCoresetSampler"]
    assert [(node, name) for node, names in inputs.items() for name in names if retired_word(name)] == []

    def parameters(function) -> set[str]:
        return set(inspect.signature(function).parameters)

    for function in (PeCA.forward, Personalizer.condition, PipelinePersonalizer.kwargs, personalize_pipeline):
        assert "degree" in parameters(function), function
    for function in (sample_count, profile_history, PipelinePersonalizer.set_history, personalize_pipeline):
        assert "max_count" in parameters(function), function
    for function in (History, PeCA.forward, Personalizer.set_history, coreset_sample):
        assert "intensities" in parameters(function), function
    assert hasattr(TasteSettings(), "max_count") and History(["a"]).intensities == (1.0,)
    assert defaults.DEGREE == 0.3 and DEFAULT_MAX_COUNT == 64

    parser = build_parser()
    run = parser.parse_args(["personalize", "--degree", "0.5", "--max-count", "3"])
    assert (run.degree, run.max_count) == ([0.5], 3)
    assert parser.parse_args(["personalize", "--alpha", "0.2"]).degree == [0.2]  # the paper's name, the same flag
    with pytest.raises(SystemExit):
        parser.parse_args(["profile", "--max-references", "3"])


def test_documented_vocabulary_matches_the_code():
    """docs/api.md's "Names" table names what this test enforces."""
    names = (ROOT / "docs/api.md").read_text(encoding="utf-8").split("## Names", 1)[1].split("\n## ", 1)[0]
    for old, new in RETIRED.items():
        if old != "alphas":
            assert re.search(rf"\b{new}\b", names) and re.search(rf"\b{old}\b", names), (old, new)
