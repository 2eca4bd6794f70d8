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


def add_tune_arguments(parser: argparse.ArgumentParser, storage_help: str) -> None:
    """The tune options, declared once for ``tune`` (MLproject) and ``tune_workers`` (launch, init, worker).

    ``--dataset --preset --n-folds --seed`` (:func:`add_cv_arguments`), ``--n-trials --timeout
    --storage --study-name --n-workers --pruner --max-epochs``; :func:`tune_config` turns them into a
    :class:`~pixel_cnn.search.tuning.TuneConfig`. ``storage_help`` says what ``--storage ''`` means
    for this command (``tune``: the sqlite file; ``tune_workers``: ``$OPTUNA_STORAGE``).
    """
    from pixel_cnn.search.tuning import PRUNERS

    add_cv_arguments(parser, seed_help="cv folds/training and sampler seed")
    parser.add_argument("--n-trials", type=whole, default=20,
                        help="finished trials this invocation adds to the study")
    parser.add_argument("--timeout", type=optional_float, default=None,
                        help="seconds after which a worker starts no new trial ('' or 0 = none)")
    parser.add_argument("--storage", default="", help=storage_help)
    parser.add_argument("--study-name", default="pixel-cnn")
    parser.add_argument("--n-workers", type=whole, default=1,
                        help="worker processes running trials at once against the storage")
    parser.add_argument("--pruner", default="median", choices=PRUNERS)
    parser.add_argument("--max-epochs", type=whole, default=40, help="upper bound of the epochs range")


def tune_config(args: argparse.Namespace, storage: str | None = None):
    """The :class:`~pixel_cnn.search.tuning.TuneConfig` of :func:`add_tune_arguments`' options.

    ``storage``: the URL to use instead of ``args.storage``. A timeout of 0 means none.

    Raises
    ------
    StorageError
        The storage is not an SQLAlchemy URL.
    """
    from pixel_cnn.search.tuning import TuneConfig

    return TuneConfig(preset=args.preset, n_folds=args.n_folds, seed=args.seed, n_trials=args.n_trials,
                      timeout=args.timeout or None, storage=args.storage if storage is None else storage,
                      study_name=args.study_name, n_workers=args.n_workers, pruner=args.pruner,
                      max_epochs=args.max_epochs)
