"""The work behind each entry point: prep and cv. Entry points only parse arguments."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pixel_cnn import tracking
from pixel_cnn.cv import CVResult, make_folds, run_cv
from pixel_cnn.data import prepare_dataset, read_dataset, resolve_data_dir, write_dataset
from pixel_cnn.models import get_preset


def prep(data_dir: str | None, labels: str, out_dir: str, cli_params: dict | None = None) -> dict:
    """Validate the stacks, join labels, write ``out_dir`` and log a prep run.

    Returns ``{"run_id", "digest", "counts", "skipped"}`` (skipped: list of
    ``(source_file, reason)``). Raises :class:`~pixel_cnn.data.DataError` when
    the folder, KOI table or labels file is unusable.
    """
    root = resolve_data_dir(data_dir)
    with tracking.job_run(tracking.EXPERIMENT_PREP, "prep", cli_params) as run_id:
        dataset = prepare_dataset(root, labels)
        out = write_dataset(dataset, out_dir, {
            "prep_run_id": run_id, "labels": labels, "source": str(root / "stacks"),
        })
        tracking.log_prep(run_id, dataset, out, root, labels)
    return {
        "run_id": run_id, "digest": dataset.digest, "counts": dataset.counts(),
        "skipped": list(dataset.skipped[["source_file", "reason"]].itertuples(index=False, name=None)),
    }


def cv(
    dataset_dir: str,
    preset_name: str,
    overrides: dict,
    n_folds: int = 5,
    seed: int = 42,
    repeats: int = 1,
    inner_folds: int = 3,
    register: bool = False,
    alias: str = "champion",
    cli_params: dict | None = None,
) -> tuple[CVResult, dict]:
    """Cross-validate a preset on a prepared dataset, tracked in MLflow.

    One parent run (this invocation) with a nested child run per fold; the
    repeat-0 fold ensemble logged as ``model`` and, with ``register``, registered
    as ``pixel-cnn`` with ``alias``. Returns ``(result, info)`` with
    ``run_id``, ``model_uri``, ``version`` and ``wall_s``.

    Raises
    ------
    DataError
        ``dataset_dir`` is not a prep output.
    CVError
        Too few targets for ``n_folds``, or a fold would lack a class (before training).
    ValueError
        Unknown preset or bad override.
    """
    start = time.perf_counter()
    preset = get_preset(preset_name, **overrides)
    dataset, info = read_dataset(dataset_dir)
    # Refuse before any run is created: too few targets, or a fold lacking a class.
    for r in range(max(repeats, 1)):
        make_folds(dataset.kepids, dataset.labels, n_folds, seed + r)
    with tracking.job_run(tracking.EXPERIMENT_CV, f"cv-{preset.name}", cli_params) as run_id:
        tracking.log_cv_inputs(run_id, dataset, info, preset)
        # A real stack (the smallest) as input example: saved with every model.
        example = min(dataset.stack_list(), key=lambda s: s.size)[None].astype(np.float32)
        result = run_cv(dataset, preset, n_folds=n_folds, seed=seed, repeats=repeats, inner_folds=inner_folds,
                        callbacks=tracking.MlflowCVCallbacks(run_id, preset, input_example=example))
        tracking.log_cv_summary(run_id, result)
        model_info, version = tracking.log_ensemble(
            run_id, result, register, alias, input_example=example, dataset_digest=dataset.digest)
    return result, {"run_id": run_id, "model_uri": model_info.model_uri, "version": version,
                    "wall_s": time.perf_counter() - start}


def bench_quality(dataset_dir: str, presets: tuple[str, ...], n_folds: int = 5, seed: int = 42,
                  repeats: int = 5, inner_folds: int = 3, out: str = "bench/results/quality.json",
                  cli_params: dict | None = None) -> tuple[dict, str]:
    """Run :func:`pixel_cnn.bench.bench_quality`, write the JSON to ``out``, log one MLflow run.

    Returns ``(bench dict with "run_id", Markdown table)``. Raises as
    :func:`pixel_cnn.bench.bench_quality` and :class:`~pixel_cnn.data.DataError`
    when ``dataset_dir`` is not a prep output. The JSON is written atomically
    (temporary file, then rename).
    """
    import json
    import os

    from pixel_cnn.bench import bench_quality as run_bench, format_table

    dataset, _ = read_dataset(dataset_dir)
    with tracking.job_run(tracking.EXPERIMENT_BENCH, "bench-quality", cli_params) as run_id:
        bench = run_bench(dataset, presets, n_folds=n_folds, seed=seed, repeats=repeats,
                          inner_folds=inner_folds, progress=lambda m: print(f"bench_quality: {m}", flush=True))
        bench["run_id"] = run_id
        table = format_table(bench)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(bench, indent=2) + "\n")
        os.replace(tmp, path)
        tracking.log_bench(run_id, bench, table)
    return bench, table
