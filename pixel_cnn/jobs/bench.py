"""The quality benchmarks: presets side by side on the same folds; the KOI-wide tabular benchmark."""

from __future__ import annotations

import json
import time

from pixel_cnn.branches import tabular as koi_branch
from pixel_cnn.evaluation.quality import bench_quality as run_bench
from pixel_cnn.evaluation.quality import format_table
from pixel_cnn.io import atomic
from pixel_cnn.io.dataset import koi_table_path, load_koi_table
from pixel_cnn.tracking import quality as tracking_quality
from pixel_cnn.tracking import runs
from pixel_cnn.tracking import tabular as tracking_tabular
from pixel_cnn.vetter import tabular
from pixel_cnn.branches.vetters import get_vetter


def bench_quality(dataset: str, presets: tuple[str, ...], n_folds: int = 5, seed: int = 42,
                  repeats: int = 5, inner_folds: int = 3, out: str = "bench/results/quality.json",
                  cli_params: dict | None = None) -> tuple[dict, str]:
    """Run :func:`pixel_cnn.evaluation.quality.bench_quality`, write the JSON to ``out``, log one MLflow run.

    Returns ``(bench dict with "run_id", Markdown table)``. Raises as
    :func:`pixel_cnn.evaluation.quality.bench_quality`, and as
    :func:`pixel_cnn.tracking.runs.open_dataset` when ``dataset`` (a folder or a
    ``runs:/`` URI) is not a prep output. The JSON is written atomically
    (temporary file, then rename).
    """
    data, info = runs.open_dataset(dataset)
    koi = None
    if any(get_vetter(p).needs_koi_table for p in presets):  # ValueError for an unknown name, before any run
        koi = load_koi_table(koi_table_path(info=info))
    with runs.job_run(runs.EXPERIMENT_BENCH, "bench-quality", cli_params) as run_id:
        bench = run_bench(data, presets, n_folds=n_folds, seed=seed, repeats=repeats,
                          inner_folds=inner_folds, progress=lambda m: print(f"bench_quality: {m}", flush=True),
                          koi=koi)
        bench["run_id"] = run_id
        table = format_table(bench)
        atomic.write_text(out, json.dumps(bench, indent=2) + "\n")
        tracking_quality.log_bench(run_id, bench, table)
    return bench, table


def bench_tabular(data_dir: str | None = None, n_folds: int = 5, seed: int = 42, n_boot: int = 1000,
                  out: str = "bench/results/tabular.json", cli_params: dict | None = None) -> dict:
    """The KOI-wide benchmark of the tabular branch: grouped, stratified k-fold cv over every
    labelled KOI of the KOI table (:func:`pixel_cnn.vetter.koi_branch.koi_cv`), one MLflow run.

    Logs the KOI training table (``mlflow.log_input``, digest), the pooled-OOF figures with their
    bootstrap intervals, fold means, ``oof_predictions.csv`` and the PR/ROC figure; writes the
    summary as JSON to ``out`` (atomically). Returns the summary with ``run_id`` and ``wall_s``.

    Raises
    ------
    DataError
        The data folder or its KOI table is unusable.
    """
    start = time.perf_counter()
    koi_path = koi_table_path(data_dir=data_dir)
    koi = load_koi_table(koi_path)
    protocol = {"n_folds": n_folds, "seed": seed, "n_boot": n_boot,
                "split": "StratifiedGroupKFold(shuffle=True, random_state=seed), groups = kepid",
                "model": "HistGradientBoostingClassifier(early_stopping=False, random_state=seed + fold)",
                "labels": "koi_disposition: CONFIRMED 1, FALSE POSITIVE 0, CANDIDATE left out",
                "features": list(tabular.FEATURE_NAMES),
                "intervals": "95% percentile bootstrap over stars (kepid), all KOIs of a drawn star kept",
                "pr_auc": "average precision (sklearn average_precision_score)"}
    with runs.job_run(runs.EXPERIMENT_BENCH, "bench-tabular", cli_params) as run_id:
        digest = tracking_tabular.log_koi_input(run_id, koi_branch.training_table(koi), str(koi_path))
        oof, summary = koi_branch.koi_cv(koi, n_folds=n_folds, seed=seed, n_boot=n_boot)
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        tracking_tabular.log_tabular_bench(run_id, oof, summary, protocol)
        atomic.write_text(out, json.dumps({"protocol": protocol, "koi_table_digest": digest, "run_id": run_id,
                                   "summary": summary}, indent=2) + "\n")
    return {**summary, "run_id": run_id, "koi_table_digest": digest}
