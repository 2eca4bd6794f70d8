"""``make`` checks the ``mlflow run`` arguments a user passes (``CV_ARGS``, ``PREP_ARGS``, ...) before any step runs.

    python -m entrypoints.project_args ENTRY_POINT VARIABLE [ARGS ...]

``ARGS`` are ``mlflow run`` options as the Makefile passes them (``-P key=value``, ``--param-list
key=value``, ``--experiment-name NAME``, ...). Every ``-P`` key must be a parameter of
``ENTRY_POINT`` in ``MLproject``; otherwise ``mlflow run`` would pass it on and the job would refuse
it only after ``make cv`` had prepared the data and created a run that then fails. Exit 0 when
every key is known; exit 2 naming the make variable, the key and the closest parameter names.
Reads ``MLproject`` with PyYAML; imports nothing heavy (a few milliseconds).
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import yaml

MLPROJECT = Path(__file__).resolve().parent.parent / "MLproject"


def entry_parameters(entry: str, mlproject: Path = MLPROJECT) -> set[str]:
    """The parameter names of ``entry`` in ``mlproject``.

    Raises
    ------
    KeyError
        ``entry`` is not an entry point of the project (the message lists them).
    """
    points = yaml.safe_load(mlproject.read_text())["entry_points"]
    if entry not in points:
        raise KeyError(f"no entry point {entry!r} in {mlproject.name}; it has {sorted(points)}")
    return set((points[entry] or {}).get("parameters") or {})


def given_keys(args: list[str]) -> list[str]:
    """The ``-P``/``--param-list`` keys of ``mlflow run`` arguments, in order (``-P a=1`` and ``-Pa=1``)."""
    keys, i = [], 0
    while i < len(args):
        token = args[i]
        value = None
        if token in ("-P", "--param-list") and i + 1 < len(args):
            value, i = args[i + 1], i + 1
        elif token.startswith("-P") and len(token) > 2:
            value = token[2:]
        elif token.startswith("--param-list="):
            value = token.split("=", 1)[1]
        if value is not None:
            keys.append(value.split("=", 1)[0])
        i += 1
    return keys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m entrypoints.project_args ENTRY_POINT VARIABLE [ARGS ...]", file=sys.stderr)
        return 2
    entry, variable, args = argv[0], argv[1], argv[2:]
    try:
        known = entry_parameters(entry)
    except KeyError as exc:
        print(f"{variable}: {exc.args[0]}", file=sys.stderr)
        return 2
    bad = [k for k in given_keys(args) if k not in known]
    for key in bad:
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        print(f"{variable}: {key!r} is not a parameter of the {entry} entry point{hint}; "
              f"its parameters: {', '.join(sorted(known))}. Nothing was run.", file=sys.stderr)
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
