"""Argument helpers shared by the entry points."""

import argparse


#: What an override parameter says when it is not given (MLproject's default): keep the preset's value.
NOT_GIVEN = ("", "preset")


def optional_float(text: str):
    """'' or 'preset' -> None (keep the preset's value), else a float."""
    return None if text.strip() in NOT_GIVEN else float(text)


def optional_int(text: str):
    """'' or 'preset' -> None, else an int (accepts '40' and '40.0')."""
    if text.strip() in NOT_GIVEN:
        return None
    value = float(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def whole(text: str) -> int:
    value = optional_int(text)
    if value is None:
        raise argparse.ArgumentTypeError("a whole number is required")
    return value


def boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true/false")


def raw_params(argv: list[str], drop: tuple[str, ...] = ()) -> dict:
    """The parameters as given on the command line (``--lr 1e-5`` -> ``{"lr": "1e-5"}``).

    Logged as they are, so a parameter is never logged again in another string form.
    Keys in ``drop`` (options that are not parameters of the run, e.g. ``run_name``) are left out.
    """
    out, key = {}, None
    for token in argv:
        if token.startswith("--"):
            key, _, value = token[2:].partition("=")
            key = key.replace("-", "_")
            if value or "=" in token:
                out[key], key = value, None
        elif key is not None:
            out[key], key = token, None
    return {k: v for k, v in out.items() if k not in drop}


def add_cv_arguments(parser: argparse.ArgumentParser, preset: bool = True, seed_help: str | None = None,
                     default_preset: str | None = None) -> None:
    """The options every cv-based entry point takes: ``--dataset``, ``--preset``, ``--n-folds``, ``--seed``.

    ``preset=False`` leaves ``--preset`` out (``bench_quality`` takes several); ``default_preset``
    (default :data:`~pixel_cnn.vetter.networks.DEFAULT_PRESET`) is ``--preset``'s default.
    """
    from pixel_cnn.vetter.networks import DEFAULT_PRESET, PRESETS

    parser.add_argument("--dataset", default="data/processed", help="prep output folder")
    if preset:
        parser.add_argument("--preset", default=default_preset or DEFAULT_PRESET, help=f"one of {sorted(PRESETS)}")
    parser.add_argument("--n-folds", type=whole, default=5)
    parser.add_argument("--seed", type=whole, default=42, help=seed_help)
