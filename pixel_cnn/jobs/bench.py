"""The quality benchmarks: presets side by side on the same folds; the KOI-wide tabular benchmark."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pixel_cnn.branches import tabular as koi_branch
from pixel_cnn.evaluation.quality import bench_quality as run_bench
from pixel_cnn.evaluation.quality import format_table
from pixel_cnn.io import atomic
from pixel_cnn.io.dataset import koi_table_path
from pixel_cnn.io.koi import load_koi_with_dv
from pixel_cnn.tracking import quality as tracking_quality
from pixel_cnn.tracking import runs
from pixel_cnn.tracking import tabular as tracking_tabular
from pixel_cnn.vetter import tabular
from pixel_cnn.branches.vetters import get_vetter


def bench_quality(dataset: str, presets: tuple[str, ...], n_folds: int = 5, seed: int = 42,
                  repeats: int = 5, inner_folds: int = 3, out: str = "bench/results/quality.json",
                  cli_params: dict | None = None) -> tuple[dict, str]:
    """Run :func:`pixel_cnn.evaluation.quality.bench_quality`, write the JSON to ``out`` and the Markdown table
    beside it (``.md``), log one MLflow run.

    Returns ``(bench dict with "run_id", Markdown table)``. Raises as
    :func:`pixel_cnn.evaluation.quality.bench_quality`, and as
    :func:`pixel_cnn.tracking.runs.open_dataset` when ``dataset`` (a folder or a
    ``runs:/`` URI) is not a prep output. The JSON is written atomically
    (temporary file, then rename).
    """
    data, info = runs.open_dataset(dataset)
    koi = None
    if any(get_vetter(p).needs_koi_table for p in presets):  # ValueError for an unknown name, before any run
        koi = load_koi_with_dv(koi_table_path(info=info))
    with runs.job_run(runs.EXPERIMENT_BENCH, "bench-quality", cli_params) as run_id:
        bench = run_bench(data, presets, n_folds=n_folds, seed=seed, repeats=repeats,
                          inner_folds=inner_folds, progress=lambda m: print(f"bench_quality: {m}", flush=True),
                          koi=koi)
        bench["run_id"] = run_id
        table = format_table(bench)
        atomic.write_text(out, json.dumps(bench, indent=2) + "\n")
        atomic.write_text(Path(out).with_suffix(".md"), f"# Quality benchmark (run {run_id})\n\n{table}\n")
        tracking_quality.log_bench(run_id, bench, table)
    return bench, table


#: Variants of the KOI-wide benchmark: name -> (feature groups, impute missing values).
TABULAR_VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "koi": (("koi",), False),
    "koi_dv": (("koi", "dv"), False),
    "koi_dv_context": (("koi", "dv", "context"), False),
    "koi_imputed": (("koi",), True),
    "koi_dv_imputed": (("koi", "dv"), True),
    "koi_dv_context_imputed": (("koi", "dv", "context"), True),
}
#: The variant whose figures are the run's headline metrics (the served branch's inputs).
TABULAR_HEADLINE = "koi_dv_context"


def _write_json(out: str, payload: dict) -> None:
    atomic.write_text(out, json.dumps(payload, indent=2) + "\n")


def bench_tabular(data_dir: str | None = None, n_folds: int = 5, seed: int = 42, n_boot: int = 1000,
                  out: str = "bench/results/tabular.json", cli_params: dict | None = None,
                  variants: tuple[str, ...] | None = None) -> dict:
    """The KOI-wide benchmark of the tabular branch: grouped (kepid), stratified k-fold cv over every
    labelled KOI of the KOI table joined with its DV diagnostics
    (:func:`pixel_cnn.branches.tabular.koi_cv`), each group of inputs added in turn (today's KOI
    inputs, + DV diagnostics, + catalogue context), each also with missing values imputed
    (:data:`TABULAR_VARIANTS`); one MLflow run.

    Logs the KOI training table (``mlflow.log_input``, digest), the headline variant's pooled-OOF
    figures (all rows and ``complete_*`` rows) with bootstrap intervals, fold means,
    ``oof_predictions.csv``, the PR/ROC figure and its ``mlflow.models.evaluate`` (custom metric
    ``recall_at_precision_99``); every variant as ``<variant>/<metric>``. Writes the JSON to ``out``
    and a Markdown table beside it (``.md``), atomically. Returns the headline summary with
    ``run_id``, ``koi_table_digest``, ``variants`` and ``evaluate``.

    Raises
    ------
    DataError
        The data folder, its KOI table or its DV diagnostics are unusable.
    """
    from pixel_cnn.tracking.evaluate import evaluate_oof

    start = time.perf_counter()
    koi_path = koi_table_path(data_dir=data_dir)
    koi = load_koi_with_dv(koi_path)
    names = tuple(variants or TABULAR_VARIANTS)
    if TABULAR_HEADLINE not in names:
        names = (TABULAR_HEADLINE, *names)
    protocol = {"n_folds": n_folds, "seed": seed, "n_boot": n_boot,
                "split": "StratifiedGroupKFold(shuffle=True, random_state=seed), groups = kepid; same folds for every variant",
                "model": "HistGradientBoostingClassifier(early_stopping=False, random_state=seed + fold), not tuned",
                "labels": "koi_disposition: CONFIRMED 1, FALSE POSITIVE 0, CANDIDATE left out",
                "features": {v: list(tabular.feature_names(TABULAR_VARIANTS[v][0])) for v in names},
                "context": "against the catalogue of all 9,564 KOIs (any disposition, measurements only), own KOI left out",
                "imputed": "missing values replaced by the training fold's medians (SimpleImputer) before fitting",
                "complete": "rows with no missing raw input of the variant's groups (branches.tabular.RAW_INPUTS)",
                "intervals": "95% percentile bootstrap over stars (kepid), all KOIs of a drawn star kept",
                "pr_auc": "average precision (sklearn average_precision_score)"}
    with runs.job_run(runs.EXPERIMENT_BENCH, "bench-tabular", cli_params) as run_id:
        digest = tracking_tabular.log_koi_input(run_id, koi_branch.training_table(koi), str(koi_path))
        prepared = koi_branch.koi_table_features(koi)
        summaries, headline_oof = {}, None
        for name in names:
            groups, impute = TABULAR_VARIANTS[name]
            oof, summary = koi_branch.koi_cv(koi, n_folds=n_folds, seed=seed, n_boot=n_boot, groups=groups,
                                             impute=impute, prepared=prepared)
            summaries[name] = summary
            if name == TABULAR_HEADLINE:
                headline_oof = oof
            print(f"bench_tabular: {name}: PR-AUC {summary['pr_auc']:.4f}, recall@P0.99 {summary['recall_at_p99']:.4f}",
                  flush=True)
        summary = dict(summaries[TABULAR_HEADLINE])
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        tracking_tabular.log_tabular_bench(run_id, headline_oof, summary, protocol)
        tracking_tabular.log_variants(run_id, summaries)
        evaluation = evaluate_oof(run_id, headline_oof)
        table = tracking_tabular.variants_table(summaries)
        tracking_tabular.log_bench_table(run_id, table, "bench/tabular.md")
        _write_json(out, {"protocol": protocol, "koi_table_digest": digest, "run_id": run_id, "summary": summary,
                          "variants": summaries, "evaluate": evaluation})
        atomic.write_text(Path(out).with_suffix(".md"), f"# KOI-wide tabular benchmark (run {run_id})\n\n" + table)
    return {**summary, "run_id": run_id, "koi_table_digest": digest, "variants": summaries,
            "evaluate": evaluation, "table": table}


def bench_dr25(dr25_dir: str | None = None, seed: int = 42, n_boot: int = 1000, out: str = "bench/results/dr25.json",
               protocols: tuple[str, ...] | None = None, cli_params: dict | None = None) -> dict:
    """The tabular branch beside ExoMiner on its own DR25 folds (:mod:`pixel_cnn.branches.dr25`); one MLflow run.

    The same model and feature code as the KOI branch on ExoMiner's 30,612 DR25 TCEs (``tce_*``
    columns mapped to the branch's inputs, context against the TCE catalogue), PC against AFP + NTP,
    for each protocol of :data:`pixel_cnn.branches.dr25.PROTOCOLS` (ExoMiner's ten folds; the input
    groups in turn; without the period features; grouped by star). The headline
    (``exominer_folds``) is logged unprefixed with its ``mlflow.models.evaluate``; every protocol
    as ``<protocol>/<metric>``; ``oof_<protocol>.csv``. JSON to ``out`` and a Markdown table beside it.

    Returns the headline summary with ``run_id``, ``protocols``, ``evaluate``, ``table``.

    Raises
    ------
    DataError
        The DR25 folder or a fold file is unusable.
    ValueError
        An unknown protocol, or a DR25 label other than PC/AFP/NTP.
    """
    from pixel_cnn.branches import dr25
    from pixel_cnn.io.koi import load_dr25, resolve_dr25_dir
    from pixel_cnn.tracking.evaluate import evaluate_oof

    start = time.perf_counter()
    names = tuple(protocols or dr25.PROTOCOLS)
    unknown = [p for p in names if p not in dr25.PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown DR25 protocol(s) {unknown}; known: {list(dr25.PROTOCOLS)}")
    headline = "exominer_folds" if "exominer_folds" in names else names[0]
    root = resolve_dr25_dir(dr25_dir)
    tces = load_dr25(root)
    protocol = {"seed": seed, "n_boot": n_boot, "labels": "label: PC 1, AFP and NTP 0",
                "model": "HistGradientBoostingClassifier(early_stopping=False, random_state=seed + fold), not tuned",
                "mapping": dr25.TCE_TO_BRANCH, "uncertainties": dr25.TCE_UNCERTAINTIES,
                "protocols": {p: {"folds": dr25.PROTOCOLS[p][0], "groups": list(dr25.PROTOCOLS[p][1]),
                                  "no_period": dr25.PROTOCOLS[p][2]} for p in names},
                "period_features": sorted(tabular.PERIOD_FEATURES),
                "exominer": "recall 0.936 at precision 0.99 (Valizadegan et al. 2022, ApJ 926, 120)",
                "intervals": "95% percentile bootstrap over stars (target_id)",
                "pr_auc": "average precision (sklearn average_precision_score)"}
    with runs.job_run(runs.EXPERIMENT_BENCH, "bench-dr25", cli_params) as run_id:
        inputs = dr25.branch_inputs(tces).drop(columns=["kepoi_name"]).assign(label=dr25.dr25_labels(tces),
                                                                               fold=tces["fold"].to_numpy())
        digest = tracking_tabular.log_table_input(run_id, inputs, str(root), "dr25-tce-exominer")
        features = dr25.dr25_features(tces)
        print(f"bench_dr25: features of {len(tces)} TCEs in {time.perf_counter() - start:.0f} s", flush=True)
        summaries, oofs = {}, {}
        for name in names:
            oof, summary = dr25.dr25_cv(tces, features, name, seed=seed, n_boot=n_boot)
            summaries[name], oofs[name] = summary, oof
            runs.log_df(run_id, oof, f"oof_{name}.csv")
            print(f"bench_dr25: {name}: recall@P0.99 {summary['recall_at_p99']:.4f} (ExoMiner 0.936), "
                  f"PR-AUC {summary['pr_auc']:.4f}, ROC-AUC {summary['roc_auc']:.4f}", flush=True)
        summary = dict(summaries[headline])
        summary["wall_s"] = round(time.perf_counter() - start, 1)
        table = tracking_tabular.variants_table(summaries, first="protocol")
        tracking_tabular.log_dr25_bench(run_id, summary, protocol, table)
        tracking_tabular.log_variants(run_id, summaries)
        evaluation = evaluate_oof(run_id, oofs[headline])
        _write_json(out, {"protocol": protocol, "dr25_digest": digest, "run_id": run_id, "summary": summary,
                          "protocols": summaries, "evaluate": evaluation})
        atomic.write_text(
            Path(out).with_suffix(".md"), f"# Tabular branch on ExoMiner's DR25 folds (run {run_id}); ExoMiner: recall 0.936 at precision 0.99\n\n"
            + table)
    return {**summary, "run_id": run_id, "protocols": summaries, "evaluate": evaluation, "table": table}
