"""``make`` checks the ``mlflow run`` arguments a user passes (``CV_ARGS``, ``PREP_ARGS``, ...) before any step runs.

    python -m entrypoints.project_args ENTRY_POINT VARIABLE [ARGS ...]

``ARGS`` are ``mlflow run`` options as the Makefile passes them (``-P key=value``, ``--param-list
key=value``, ``--experiment-name NAME``, ...). Every ``-P`` key must be a parameter of
``ENTRY_POINT`` in ``MLproject`` and be given as ``-P key=value``; otherwise ``mlflow run`` would
refuse it, or the job would, only after ``make cv`` had prepared the data (and created a run that
then fails). Exit 0 when every key is known; exit 2 naming the make variable, the key and the
closest parameter names, or the malformed argument. Parameter VALUES (an unknown preset, say) are
the job's to check: that needs the package, which this check does not import.
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


#: ``mlflow run`` options that take a value (the next token, or ``--opt=value``).
VALUE_OPTIONS = frozenset({"-e", "--entry-point", "-v", "--version", "-P", "--param-list", "-A", "--docker-args",
                           "--experiment-name", "--experiment-id", "-b", "--backend", "-c", "--backend-config",
                           "--env-manager", "--storage-dir", "--run-id", "--run-name"})


def read_args(args: list[str]) -> tuple[list[str], list[str]]:
    """``(keys, problems)`` of ``mlflow run`` arguments: the ``-P``/``--param-list`` keys in order (``-P a=1``,
    ``-Pa=1``, ``--param-list=a=1``), and what ``mlflow run`` would refuse only later: a ``-P`` without
    ``key=value``, a bare ``key=value`` without ``-P``."""
    keys, problems, i = [], [], 0
    while i < len(args):
        token, value = args[i], None
        if token in ("-P", "--param-list"):
            value = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        elif token.startswith("-P") and len(token) > 2:
            value = token[2:]
        elif token.startswith("--param-list="):
            value = token.split("=", 1)[1]
        elif token in VALUE_OPTIONS:
            i += 1  # its value is not a parameter
        elif not token.startswith("-"):
            hint = f" (did you mean -P {token}?)" if "=" in token else ""
            problems.append(f"{token!r} is not an option of mlflow run{hint}")
        if value is not None:
            if "=" not in value or not value.split("=", 1)[0]:
                problems.append(f"-P {value!r}: a parameter is given as -P key=value")
            else:
                keys.append(value.split("=", 1)[0])
        i += 1
    return keys, problems


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
    keys, problems = read_args(args)
    for problem in problems:
        print(f"{variable}: {problem}. Nothing was run.", file=sys.stderr)
    bad = [k for k in keys if k not in known]
    for key in bad:
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        print(f"{variable}: {key!r} is not a parameter of the {entry} entry point{hint}; "
              f"its parameters: {', '.join(sorted(known))}. Nothing was run.", file=sys.stderr)
    return 2 if bad or problems else 0


if __name__ == "__main__":
    sys.exit(main())
