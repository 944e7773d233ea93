"""The floor plan: layers import downward only, and no import circle exists, imports inside functions counted."""

from __future__ import annotations

import ast
from pathlib import Path

import mnist_hitl

PACKAGE = Path(mnist_hitl.__file__).parent

# The layers, from the ground up (the README's "Layout" repeats this order). A module may import its
# own layer and those below it, never one above.
LAYERS = (
    ("ground", ("config", "names", "clock", "files", "resources", "preprocess")),
    ("recorder", ("metrics",)),
    ("store", ("store",)),
    ("model", ("model",)),
    ("workbench", ("workbench",)),
    ("learning", ("learning",)),
    ("services", ("services",)),
    ("faces", ("api", "app")),
    ("command", ("cli",)),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, (_, names) in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and to the README")


def imports_of(module: str) -> set[str]:
    """Every module of the package that ``module`` imports, at its top or inside a function."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from package import module` names the module itself
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        if module != "mnist_hitl":
            layer_of(module)


def test_no_import_runs_up_a_layer():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module != "mnist_hitl"
        for target in targets
        if target != "mnist_hitl" and layer_of(target) > layer_of(module)
    )
    assert upward == []


def test_no_import_circle():
    circles, done, path = [], set(), []

    def visit(module: str) -> None:
        if module in path:
            circles.append(" -> ".join([*path[path.index(module) :], module]))
            return
        if module in done:
            return
        path.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
    assert circles == []


def test_the_recorder_imports_only_the_ground_floor():
    assert {layer_of(target) for target in GRAPH["mnist_hitl.metrics"]} <= {0}
