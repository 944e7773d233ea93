"""The boundaries the layout promises: a TensorFlow-free serving half, one reader of the environment,
modules and functions small enough to read, and settings that refuse bad values in one line."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mnist_hitl
from mnist_hitl.config import Settings, SettingsError, get_settings
from tests.support.helpers import run_cli

PACKAGE = Path(mnist_hitl.__file__).parent
README = PACKAGE.parent / "README.md"
MODULES = sorted(PACKAGE.rglob("*.py"))
SERVING = [path for path in MODULES if "learning" not in path.relative_to(PACKAGE).parts]
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}  # os's ways in
# The learning modules slow to import (TensorFlow, MLflow, Optuna, Prefect, Evidently), by name, in any of its folders.
HEAVY = ("network", "search", "training", "cycle", "schedule", "tracking", "monitoring", "deployment", "drift")
MAX_MODULE_LINES = 400  # physical lines, as `wc -l` counts them
MAX_FUNCTION_LINES = 60  # physical lines, from the `def` line to the function's last line


def name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_nothing_outside_learning_imports_tensorflow_or_keras():
    offenders = {
        name(path): sorted(m for m in imported_modules(path) if m.split(".")[0] in ("tensorflow", "keras"))
        for path in SERVING
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_importing_every_serving_module_loads_no_tensorflow():
    modules = [name(path) for path in SERVING if path.stem not in ("__init__", "__main__")]
    script = (
        "import importlib, sys\n"
        f"for module in {modules!r}:\n    importlib.import_module(module)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_only_config_reads_the_environment():
    """Every module of every folder, however deep, but the top-level ``config``."""
    readers = []
    for path in MODULES:
        if path.name == "config.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            touched = (isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT) or (
                isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & ENVIRONMENT
            )
            if touched:
                readers.append(f"{name(path)}:{node.lineno}")
    assert readers == []


def test_modules_and_functions_are_short_enough_to_read():
    long_modules, long_functions = {}, {}
    for path in MODULES:
        source = path.read_text()
        if (lines := source.count("\n")) > MAX_MODULE_LINES:
            long_modules[name(path)] = lines
        for node in ast.walk(ast.parse(source)):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and (lines := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                long_functions[f"{name(path)}.{node.name}"] = lines
    assert long_modules == {}
    assert long_functions == {}


def test_the_serving_half_does_not_import_the_learning_half_at_module_level():
    """The app, the CLI and the metrics stay light: the learning half is imported inside the commands that need it."""
    learning = [name(path) for path in MODULES if path.relative_to(PACKAGE).parts[0] == "learning"]
    heavy = {module for module in learning if module.rpartition(".")[2] in HEAVY}
    assert sorted({module.rpartition(".")[2] for module in heavy}) == sorted(HEAVY)  # a renamed one is not lost
    offenders = {}
    for path in SERVING:
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        for node in (n for n in top if isinstance(n, ast.ImportFrom) and n.module):  # `from package import module`
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        if names & heavy:
            offenders[name(path)] = sorted(names & heavy)
    assert offenders == {}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MNIST_HITL_APP_PORT", "abc"),
        ("MNIST_HITL_APP_PORT", "70000"),
        ("MIN_NEW_LABELS", "-1"),
        ("DRIFT_THRESHOLD", "high"),
        ("MNIST_HITL_MNIST_SOURCE", "internet"),
    ],
)
def test_a_bad_setting_stops_the_cli_with_one_line_naming_it(home, variable, value):
    env = {"MNIST_HITL_HOME": str(home.home), "PATH": "/usr/bin:/bin", variable: value}
    done = run_cli(env, "status", timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and repr(value) in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not home.db_path.exists()  # nothing was touched


def test_bad_settings_raise_a_settings_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MNIST_HITL_METRICS_PORT", "0")
    with pytest.raises(SettingsError, match="MNIST_HITL_METRICS_PORT"):
        get_settings()


def test_home_is_never_taken_from_the_users_home_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_HITL_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "someone"))
    monkeypatch.chdir(tmp_path)
    assert get_settings().home == tmp_path / "var"


def test_every_setting_is_documented_in_the_readme():
    readme = README.read_text()
    variables = [str(field.validation_alias) for field in Settings.model_fields.values()]
    assert [v for v in variables if f"`{v}`" not in readme] == []


def layout_rows() -> list[str]:
    """The first cells of the README's layout table."""
    section = README.read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]


def test_every_module_is_in_the_readmes_layout_table():
    """A row names a module by its whole path, or by its file name after a whole path in the same folder."""
    listed = set()
    for cell in layout_rows():
        folder = None
        for item in re.findall(r"`([^`]+)`", cell):
            if "/" in item:
                folder = item.rpartition("/")[0]
                listed.add(item)
            elif folder:
                listed.add(f"{folder}/{item}")
    modules = {
        str(path.relative_to(PACKAGE.parent)) for path in MODULES if path.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - listed) == []
