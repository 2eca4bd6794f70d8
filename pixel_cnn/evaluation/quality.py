"""Quality benchmark: several presets, one protocol, the same folds. No MLflow here.

:func:`bench_quality` cross-validates each preset with :func:`pixel_cnn.evaluation.cv.run_cv`
under the same seed, so every preset sees the same grouped folds in every
repeat (checked, not assumed), and the same honest protocol: fixed schedule,
last epoch kept, each fold's threshold from an inner split of its training
targets. The table reports, per preset, the mean and standard deviation over
repeats of pooled out-of-fold PR-AUC (average precision), ROC-AUC, F1 at each
fold's chosen threshold and Brier score, plus the 95 % bootstrap interval of
the pooled PR-AUC.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd

from pixel_cnn.evaluation.cv import INNER_FOLDS, CVResult, run_cv
from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.evaluation.fusion import run_fusion_cv
from pixel_cnn.evaluation.metrics import binary_metrics, bootstrap_pr_auc, thresholded_metrics
from pixel_cnn.vetter.networks import get_preset, is_fusion

#: Columns of the table: pooled-OOF metric keys of :func:`pixel_cnn.evaluation.cv.summarize`.
TABLE_METRICS = ("pr_auc", "roc_auc", "f1", "brier")
#: Table row of the tabular branch alone (from a fusion cv: same folds and repeats).
TABULAR = "tabular"


def fold_digest(result: CVResult) -> str:
    """16 hex digits identifying the fold assignment (repeat, fold, kepid) of a cv result."""
    rows = result.oof[["repeat", "fold", "kepid"]].sort_values(["repeat", "kepid"])
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


def per_repeat_scores(result: CVResult, column: str = "probability", threshold: str = "threshold") -> pd.DataFrame:
    """One row per repeat: pooled-OOF PR-AUC, ROC-AUC, Brier and F1 / accuracy at the fold thresholds.

    ``column`` / ``threshold``: the OOF columns scored (a fusion cv's branches:
    ``probability_tabular`` / ``threshold_tabular`` ...).
    """
    rows = []
    for r, g in result.oof.groupby("repeat"):
        scores = binary_metrics(g["label"], g[column])
        scores.update(thresholded_metrics(g["label"], g[column], g[threshold]))
        rows.append({"repeat": int(r), **scores})
    return pd.DataFrame(rows)


def table_entry(result: CVResult, column: str = "probability", threshold: str = "threshold",
                seed: int = 0) -> dict:
    """One row of the table: ``{metric: {"mean", "std", "per_repeat"}}``, ``pr_auc_ci95``, ``threshold_mean``."""
    scores = per_repeat_scores(result, column, threshold)
    entry = {
        m: {"mean": float(scores[m].mean()),
            "std": float(scores[m].std(ddof=1)) if len(scores) > 1 else 0.0,
            "per_repeat": [float(v) for v in scores[m]]}
        for m in TABLE_METRICS
    }
    if column == "probability":
        entry["pr_auc_ci95"] = [result.summary["pr_auc_oof_ci_low"], result.summary["pr_auc_oof_ci_high"]]
    else:
        wide = result.oof.pivot(index="kepid", columns="repeat", values=column)
        labels = result.oof.drop_duplicates("kepid").set_index("kepid").loc[wide.index, "label"]
        entry["pr_auc_ci95"] = list(bootstrap_pr_auc(labels.to_numpy(), wide.to_numpy().T, seed=seed))
    entry["threshold_mean"] = float(result.oof.drop_duplicates(["repeat", "fold"])[threshold].mean())
    return entry


def bench_quality(
    dataset: Dataset,
    preset_names: tuple[str, ...] = ("seed", "phase"),
    n_folds: int = 5,
    seed: int = 42,
    repeats: int = 5,
    inner_folds: int = INNER_FOLDS,
    progress=None,
    koi: pd.DataFrame | None = None,
) -> dict:
    """Cross-validate each preset on the same folds; return the table as a JSON-able dict.

    Parameters
    ----------
    dataset : Dataset
        Prepared benchmark targets.
    preset_names : tuple of str
        Presets (names of :data:`pixel_cnn.vetter.networks.PRESETS`), in table order.
    n_folds, seed, repeats, inner_folds
        Passed to :func:`pixel_cnn.evaluation.cv.run_cv`, identical for every preset.
    progress : callable, optional
        ``progress(message)`` after each preset.
    koi : DataFrame, optional
        The KOI table; needed by a fusion preset and by ``tabular`` (:data:`TABULAR`: the
        tabular-only row, which is the tabular branch of the fusion cv on the same folds; the
        fusion cv is run for it if no fusion preset is listed).

    Returns
    -------
    dict
        ``protocol`` (the settings), ``dataset_digest``, ``fold_digest`` and
        ``presets``: name -> ``{metric: {"mean", "std", "per_repeat"}, ...,
        "pr_auc_ci95": [low, high], "threshold_mean", "wall_s", "config"}``.

    Raises
    ------
    RuntimeError
        Two presets did not see the same folds (a bug: folds depend on seed and
        labels only).
    ValueError, CVError
        Unknown preset; too few targets for the folds.
    """
    out = {
        "protocol": {
            "n_folds": n_folds, "repeats": repeats, "seed": seed, "inner_folds": inner_folds,
            "split": "StratifiedGroupKFold(shuffle=True, random_state=seed + repeat), groups = kepid",
            "selection": "fixed epochs, last epoch kept; threshold F1-optimal on an inner split "
                         "of each fold's training targets; nothing chosen on validation folds",
            "pr_auc": "average precision (sklearn average_precision_score)",
        },
        "dataset_digest": dataset.digest,
        "n_targets": int(len(dataset.labels)),
        "positive_rate": float(np.mean(dataset.labels)),
        "presets": {},
    }
    digests = {}
    wanted = [n for n in preset_names if n != TABULAR]
    if TABULAR in preset_names and not any(is_fusion(get_preset(n)) for n in wanted):
        wanted.append("fusion")  # the tabular-only row is the fusion cv's tabular branch
    for name in wanted:
        preset = get_preset(name)
        start = time.perf_counter()
        if is_fusion(preset):
            if koi is None:
                raise ValueError(f"preset {name!r} needs the KOI table (koi=...)")
            result = run_fusion_cv(dataset, preset, koi, n_folds=n_folds, seed=seed, repeats=repeats,
                                   inner_folds=inner_folds)
        else:
            result = run_cv(dataset, preset, n_folds=n_folds, seed=seed, repeats=repeats, inner_folds=inner_folds)
        wall = time.perf_counter() - start
        digests[name] = fold_digest(result)
        entry = table_entry(result, seed=seed)
        entry["threshold_mean"] = float(np.mean([f.threshold for f in result.folds]))
        entry["wall_s"] = round(wall, 1)
        entry["config"] = preset.to_dict()
        if name in preset_names:
            out["presets"][name] = entry
        if is_fusion(preset):
            for branch in ("pixel", "tabular"):
                sub = table_entry(result, f"probability_{branch}", f"threshold_{branch}", seed=seed)
                sub["wall_s"], sub["config"] = round(wall, 1), {"branch_of": name, "branch": branch}
                entry[f"branch_{branch}"] = {m: sub[m]["mean"] for m in TABLE_METRICS}
                if branch == "tabular" and TABULAR in preset_names:
                    out["presets"][TABULAR] = sub
        if progress:
            progress(f"{name}: PR-AUC {entry['pr_auc']['mean']:.3f} in {wall:.0f} s")
    out["presets"] = {n: out["presets"][n] for n in preset_names}
    if len(set(digests.values())) > 1:
        raise RuntimeError(f"presets saw different folds: {digests}")
    out["fold_digest"] = next(iter(digests.values()))
    return out


def merge_benches(benches: list[dict]) -> dict:
    """One table from several :func:`bench_quality` results of the same protocol and folds.

    Lets presets run as separate processes (e.g. in parallel on a busy machine)
    and still be compared on the same folds.

    Raises
    ------
    ValueError
        Protocols, datasets or fold assignments differ (the message says which).
    """
    first = benches[0]
    for other in benches[1:]:
        for key in ("protocol", "dataset_digest", "fold_digest"):
            if other[key] != first[key]:
                raise ValueError(f"cannot merge benchmarks: {key} differs ({first[key]} vs {other[key]})")
    merged = {k: v for k, v in first.items() if k not in ("presets", "run_id")}
    merged["presets"] = {name: e for b in benches for name, e in b["presets"].items()}
    merged["run_ids"] = [b.get("run_id") for b in benches]
    return merged


def format_table(bench: dict) -> str:
    """The benchmark as a Markdown table: mean +/- std over repeats, 95 % CI of PR-AUC."""
    p = bench["protocol"]
    head = ("| preset | PR-AUC (AP) | 95 % CI (bootstrap) | ROC-AUC | F1 @ chosen threshold | Brier | wall s |\n"
            "| --- | --- | --- | --- | --- | --- | --- |")
    lines = [f"Pooled out-of-fold scores, {bench['n_targets']} targets (positive rate "
             f"{bench['positive_rate']:.2f}), {p['repeats']} repeats of grouped {p['n_folds']}-fold cv, "
             f"seed {p['seed']}, inner_folds {p['inner_folds']}; mean +/- std over repeats.", "", head]
    for name, e in bench["presets"].items():
        cells = [f"{e[m]['mean']:.3f} +/- {e[m]['std']:.3f}" for m in TABLE_METRICS]
        lo, hi = e["pr_auc_ci95"]
        lines.append(f"| {name} | {cells[0]} | {lo:.3f} - {hi:.3f} | {cells[1]} | {cells[2]} | {cells[3]} "
                     f"| {e['wall_s']:.0f} |")
    return "\n".join(lines)
