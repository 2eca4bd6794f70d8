"""The served model's pip requirements: the whole resolved set it runs on, taken from ``constraints.txt``.

What the model needs is the transitive closure, through the installed distributions'
metadata (:func:`importlib.metadata.requires`, environment markers evaluated here),
of the distributions its code imports (the ``import`` statements of the shipped
modules, mapped by :func:`importlib.metadata.packages_distributions`) and of what the
scoring server needs (:data:`SERVING_ROOTS`). Every one of them is pinned to its version
in the project's one resolved set, ``constraints.txt``, so the model's environment and
the project's ``.venv`` never drift (``tests/test_deploy.py`` compares them).

torch is the CPU build (the model never uses a GPU): ``+cpu`` wheels from PyTorch's CPU
index, given as an extra index, on Linux and Windows; macOS wheels are CPU-only and carry no
local label. Platform-only packages carry environment markers (:data:`PLATFORM_MARKERS`):
requirements that would not install elsewhere are skipped there, not failed.

``python -m entrypoints.model_requirements`` prints them, one a line (the Makefile's
``wheelhouse`` step downloads exactly these for offline environment builds).
"""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONSTRAINTS = PACKAGE_DIR.parent / "constraints.txt"
#: PyTorch's index of CPU-only wheels (``torch-X+cpu``, about 0.2 GB against 2.7 GB of CUDA wheels).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
#: Distributions that serving needs beyond the model's imports: uvicorn's event loop (the
#: scoring server's ``--workers N`` loses TCP_NODELAY with asyncio's loop; uvloop sets it).
SERVING_ROOTS = ("uvloop",)
#: The distribution that provides an imported top-level module when several do. ``mlflow``
#: is provided by ``mlflow`` (tracking server and UI), ``mlflow-skinny`` and ``mlflow-tracing``:
#: loading and serving a pyfunc model (``mlflow.pyfunc``, its scoring server) is ``mlflow-skinny``.
MODULE_DISTRIBUTION = {"mlflow": "mlflow-skinny"}
#: Where a distribution installs at all (PEP 508 markers): uvloop has no Windows (nor PyPy) build;
#: the same marker as uvicorn's ``standard`` extra.
PLATFORM_MARKERS = {
    "uvloop": 'sys_platform != "win32" and sys_platform != "cygwin" and platform_python_implementation != "PyPy"',
}


class RequirementsError(RuntimeError):
    """The model's requirements cannot be pinned: a needed distribution is missing from
    ``constraints.txt`` or not installed (the message names it)."""


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, tuple[str, str]]:
    """``{canonical name: (name as written, version)}`` of the ``name==version`` lines of ``path``.

    Raises
    ------
    RequirementsError
        A line that is not ``name==version`` (comments and blank lines are skipped).
    """
    pins = {}
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise RequirementsError(f"{path}:{lineno}: {raw!r} is not name==version")
        pins[canonicalize_name(name.strip())] = (name.strip(), version.strip())
    return pins


def imported_distributions(files) -> set[str]:
    """Canonical names of the installed distributions that the Python ``files`` import (any depth of the AST).

    Standard-library modules and the project's own package are not distributions and are left out.
    """
    providers = metadata.packages_distributions()
    dists = set()
    for path in files:
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "pixel_cnn":
                    continue
                if top in MODULE_DISTRIBUTION:
                    dists.add(canonicalize_name(MODULE_DISTRIBUTION[top]))
                    continue
                candidates = providers.get(top)
                if not candidates:
                    raise RequirementsError(f"{path}: imports {top!r}, which no installed distribution provides")
                if len(set(map(canonicalize_name, candidates))) > 1:
                    raise RequirementsError(
                        f"{path}: {top!r} is provided by {sorted(set(candidates))}: name the one in MODULE_DISTRIBUTION")
                dists.add(canonicalize_name(candidates[0]))
    return dists


def _requires(dist: str, extras: frozenset[str]) -> list[Requirement]:
    """Requirements of installed ``dist`` (with ``extras``) whose markers hold in this interpreter."""
    out = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.marker is None:
            out.append(req)
            continue
        if any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            out.append(req)
    return out


def closure(roots) -> set[str]:
    """Canonical names of ``roots`` and of everything they require, transitively (installed metadata).

    Raises
    ------
    RequirementsError
        A required distribution is not installed.
    """
    seen: dict[str, frozenset[str]] = {}
    todo = [(canonicalize_name(r), frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop()
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, frozenset()) | extras
        try:
            reqs = _requires(name, seen[name])
        except metadata.PackageNotFoundError:
            raise RequirementsError(f"{name} is needed by the served model but is not installed") from None
        todo.extend((canonicalize_name(r.name), frozenset(r.extras)) for r in reqs)
    return set(seen)


def model_requirements(files, constraints: Path | None = CONSTRAINTS) -> list[str]:
    """pip requirement lines of the served model, sorted by name; ``torch`` is the CPU build.

    ``files``: the model's Python files (:func:`pixel_cnn.tracking.served.served_files`). ``constraints``: the resolved
    set to pin from (default the checkout's ``constraints.txt``; None = the installed versions, for
    an installed, non-editable package).

    Returns ``["--extra-index-url <CPU_TORCH_INDEX>", "cloudpickle==3.1.3", ...,
    "torch==2.13.0+cpu; sys_platform != \\"darwin\\"", "torch==2.13.0; sys_platform == \\"darwin\\"",
    "uvloop==0.23.0; sys_platform != \\"win32\\" ...", ...]``.

    Raises
    ------
    RequirementsError
        A distribution of the closure has no pin in ``constraints`` (the message names it).
    """
    roots = imported_distributions(files) | set(SERVING_ROOTS)
    names = closure(roots)
    pins = read_constraints(constraints) if constraints is not None else {
        n: (metadata.metadata(n)["Name"], metadata.version(n)) for n in names}
    missing = sorted(n for n in names if n not in pins)
    if missing:
        raise RequirementsError(
            f"{', '.join(missing)}: needed by the served model but not pinned in {constraints}; add "
            "them (name==version, the installed version) so the model and the project share one resolved set")
    lines = []
    for name in sorted(names):
        written, version = pins[name]
        if name == "torch":
            base = version.split("+")[0]
            lines += [f'torch=={base}+cpu; sys_platform != "darwin"', f'torch=={base}; sys_platform == "darwin"']
            continue
        marker = PLATFORM_MARKERS.get(name)
        lines.append(f"{written}=={version}" + (f"; {Marker(marker)}" if marker else ""))
    return [f"--extra-index-url {CPU_TORCH_INDEX}"] + lines
