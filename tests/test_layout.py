"""The package's layers, read from the code's own imports (README "Layout").

``core`` imports no other layer and no MLflow; ``io`` only ``core``; ``tracking`` (the only
MLflow importer) ``core`` and ``io``; ``jobs`` and ``predict`` sit on top. No import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import PROJECT

PACKAGE = PROJECT / "pixel_cnn"
#: What each layer may import from the package (itself included).
ALLOWED = {
    "core": {"core"},
    "io": {"core", "io"},
    "tracking": {"core", "io", "tracking"},
    "top": {"core", "io", "tracking", "top"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ("core", "io", "tracking") else "top"


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (at any depth: lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
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


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) != "tracking"))
def test_only_the_tracking_sub_package_imports_mlflow(module):
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
