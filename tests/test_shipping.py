"""What the Comfy Registry shows and ships agrees with what the pack needs (docs/shipping.md)."""

import ast
from pathlib import Path

import tomllib

from drum_core.project import ISSUES_URL, REPOSITORY_URL

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def test_the_registry_shows_what_installs():
    """The Registry displays [project] dependencies; ComfyUI-Manager and comfy-cli install requirements.txt: both
    empty (the pack adds nothing to ComfyUI); the standalone library's packages are the `core` extra, in every extra."""
    assert requirement_lines(ROOT / "requirements.txt") == PYPROJECT["project"]["dependencies"] == []
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {line.split(">")[0] for line in extras["core"]} == {"torch", "safetensors", "numpy", "tqdm", "pillow", "psutil"}
    assert all(f"{PYPROJECT['project']['name']}[core]" in extras[name] for name in extras if name != "core")


def test_addresses_are_one_definition():
    urls = PYPROJECT["project"]["urls"]
    assert urls["Repository"] == REPOSITORY_URL and urls["Issues"] == ISSUES_URL


def test_the_icon_is_a_shipped_file_of_the_repository():
    icon = PYPROJECT["tool"]["comfy"]["Icon"]
    prefix = REPOSITORY_URL.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert icon.startswith(prefix)
    path = ROOT / icon.removeprefix(prefix)
    assert path.is_file() and path.read_text(encoding="utf-8").lstrip().startswith("<svg")
    assert not ignored(path.relative_to(ROOT).as_posix())


def comfyignore() -> list[str]:
    lines = (line.strip() for line in (ROOT / ".comfyignore").read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ignored(relative: str) -> bool:
    """The .comfyignore rules this repository uses: a folder (`name/`), a file, or `folder/*.ext`."""
    for rule in comfyignore():
        if rule.endswith("/") and (relative + "/").startswith(rule):
            return True
        if rule == relative:
            return True
        if "*" in rule and Path(relative).match(rule):
            return True
    return False


def module_path(module: str) -> Path | None:
    for candidate in (ROOT / (module.replace(".", "/") + ".py"), ROOT / module.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def drum_core_imports(path: Path, module: str) -> set[str]:
    """Every drum_core module `path` imports, at the top or inside a function (either may run in ComfyUI)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "drum_core"}


def modules_the_pack_reaches() -> set[str]:
    """drum_core files reached from the pack's __init__.py and nodes/ (each module's packages included)."""
    todo = set(drum_core_imports(ROOT / "__init__.py", "pack"))
    for path in (ROOT / "nodes").glob("*.py"):
        todo |= drum_core_imports(path, f"nodes.{path.stem}")
    reached: dict[str, Path] = {}
    while todo:
        parts = todo.pop().split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            path = module_path(name)
            if path is not None and name not in reached:
                reached[name] = path
                todo |= drum_core_imports(path, name)
    return {path.relative_to(ROOT).as_posix() for path in reached.values()}


def test_the_archive_leaves_out_exactly_the_core_modules_the_nodes_never_import():
    every = {path.relative_to(ROOT).as_posix() for path in (ROOT / "drum_core").rglob("*.py")}
    reached = modules_the_pack_reaches()
    assert {"drum_core/__init__.py", "drum_core/peca.py", "drum_core/history.py"} <= reached
    assert {path for path in every if ignored(path)} == every - reached
