"""The package's layers, read from the code's own imports (README "Layout").

Bottom to top: ``vetter`` (what the registered model ships) imports nothing else of the
package, and only by relative import, so it can ship as a folder under its own name; the
science folders (``stacks``, ``branches``, ``evaluation``, ``search``, ``drawing``) import
``vetter`` and each other; ``io`` the layers below; ``tracking`` (with ``vetter/pyfunc.py``, the
only MLflow importers) ``io`` and below; ``jobs``, ``scoring`` and ``predict`` sit on top. No
import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import PROJECT

PACKAGE = PROJECT / "pixel_cnn"
#: What each layer may import from the package (itself included).
SCIENCE = ("stacks", "branches", "evaluation", "search", "drawing")
ALLOWED = {
    "vetter": {"vetter"},
    "science": {"vetter", "science"},
    "io": {"vetter", "science", "io"},
    "tracking": {"vetter", "science", "io", "tracking"},
    "top": {"vetter", "science", "io", "tracking", "top"},
}
#: The only modules outside ``tracking/`` that may import MLflow: the served model's wrapper.
MLFLOW_OUTSIDE_TRACKING = {"pixel_cnn.vetter.pyfunc", "pixel_cnn.vetter.serving_model"}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in SCIENCE:
        return "science"
    return parts[1] if len(parts) > 2 and parts[1] in ("vetter", "io", "tracking") else "top"


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (at any depth: lazy imports count),
    relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(PROJECT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            if base:
                names.add(base)
                names |= {f"{base}.{a.name}" for a in node.names}
    return names


def _absolute_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PROJECT).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _package_imports(module: str) -> set[str]:
    return {m for m in _imports(MODULES[module]) if m in MODULES and m != module}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_its_own_layer_and_those_below(module):
    layer = _layer(module)
    bad = {m for m in _package_imports(module) if _layer(m) not in ALLOWED[layer]}
    assert not bad, f"{module} ({layer}) imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) != "tracking"
                                           and m not in MLFLOW_OUTSIDE_TRACKING))
def test_only_the_tracking_sub_package_and_the_served_wrapper_import_mlflow(module):
    mlflow = {m for m in _imports(MODULES[module]) if m == "mlflow" or m.startswith("mlflow.")}
    assert not mlflow, f"{module} imports {sorted(mlflow)}"


def test_no_import_cycle():
    graph = {m: _package_imports(m) for m in MODULES}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for n in graph[m]:
            visit(n)
        path.pop()
        done.add(m)

    for m in graph:
        visit(m)


def test_operations_tools_and_clis_live_outside_the_package():
    clis = [m for m, p in MODULES.items() if "def main(" in p.read_text()]
    assert clis == ["pixel_cnn.predict"]  # the product's own command; every other CLI is in entrypoints/
    assert not (PACKAGE / "services.py").exists() and (PROJECT / "ops" / "services.py").exists()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "vetter"
                                           and m != "pixel_cnn.vetter.serving_model"))
def test_the_served_folder_imports_itself_only_by_relative_import(module):
    """``vetter/`` ships under its own top-level name: an absolute ``pixel_cnn`` import would break it."""
    absolute = {m for m in _absolute_imports(MODULES[module]) if m.split(".")[0] == "pixel_cnn"}
    assert not absolute, f"{module} imports {sorted(absolute)} by absolute name"
