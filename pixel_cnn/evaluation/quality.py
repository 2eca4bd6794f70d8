"""Quality benchmark: several presets, one protocol, the same folds. No MLflow here.

:func:`bench_quality` cross-validates each vetter with :func:`pixel_cnn.evaluation.cv.run_cv`
under the same seed, so every vetter sees the same grouped folds in every
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

from pixel_cnn.branches.vetters import get_vetter
from pixel_cnn.evaluation.cv import INNER_FOLDS, CVResult, oof_interval, repeat_scores, run_cv
from pixel_cnn.stacks.dataset import Dataset

#: Columns of the table: pooled-OOF metric keys of :func:`pixel_cnn.evaluation.cv.summarize`.
TABLE_METRICS = ("pr_auc", "roc_auc", "f1", "brier")


def fold_digest(result: CVResult) -> str:
    """16 hex digits identifying the fold assignment (repeat, fold, kepid) of a cv result."""
    rows = result.oof[["repeat", "fold", "kepid"]].sort_values(["repeat", "kepid"])
    return hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:16]


def table_entry(result: CVResult, column: str = "probability", threshold: str = "threshold",
                seed: int = 0) -> dict:
    """One row of the table: ``{metric: {"mean", "std", "per_repeat"}}``, ``pr_auc_ci95``, ``threshold_mean``.

    Scores per repeat from :func:`pixel_cnn.evaluation.cv.repeat_scores`, the interval from
    :func:`pixel_cnn.evaluation.cv.oof_interval` (the same as the cv's own for ``probability``).
    """
    scores = pd.DataFrame(repeat_scores(result.oof, column, threshold))
    entry = {
        m: {"mean": float(scores[m].mean()),
            "std": float(scores[m].std(ddof=1)) if len(scores) > 1 else 0.0,
            "per_repeat": [float(v) for v in scores[m]]}
        for m in TABLE_METRICS
    }
    entry["pr_auc_ci95"] = list(oof_interval(result.oof, seed, column=column))
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
    """Cross-validate each vetter on the same folds; return the table as a JSON-able dict.

    Parameters
    ----------
    dataset : Dataset
        Prepared benchmark targets.
    preset_names : tuple of str
        Vetters (names of :data:`pixel_cnn.branches.vetters.VETTERS`: ``seed``, ``phase``,
        ``phase2``, ``tabular``, ``fusion``), in table order.
    n_folds, seed, repeats, inner_folds
        Passed to :func:`pixel_cnn.evaluation.cv.run_cv`, identical for every vetter.
    progress : callable, optional
        ``progress(message)`` after each vetter.
    koi : DataFrame, optional
        The KOI table; needed by a vetter with a tabular branch.

    Returns
    -------
    dict
        ``protocol`` (the settings), ``dataset_digest``, ``fold_digest`` and
        ``presets``: name -> ``{metric: {"mean", "std", "per_repeat"}, ...,
        "pr_auc_ci95": [low, high], "threshold_mean", "wall_s", "config"}``; a vetter with several
        branches also has ``branch_<b>``: each branch's mean scores on the same folds.

    Raises
    ------
    RuntimeError
        Two vetters did not see the same folds (a bug: folds depend on seed and labels only).
    ValueError, CVError
        Unknown vetter, a tabular branch without ``koi``; too few targets for the folds.
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
    for name in preset_names:
        spec = get_vetter(name)
        start = time.perf_counter()
        branches = spec.branches(koi=koi) if spec.needs_koi_table else spec.branches()
        result = run_cv(dataset, branches, n_folds=n_folds, seed=seed, repeats=repeats, inner_folds=inner_folds,
                        vetter=name)
        wall = time.perf_counter() - start
        digests[name] = fold_digest(result)
        entry = table_entry(result, seed=seed)
        entry["threshold_mean"] = float(np.mean([f.threshold for f in result.folds]))
        entry["wall_s"] = round(wall, 1)
        entry["config"] = {b.name: b.describe() for b in branches}
        if spec.has_combiner:
            for branch in spec.branch_names:
                sub = table_entry(result, f"probability_{branch}", f"threshold_{branch}", seed=seed)
                entry[f"branch_{branch}"] = {m: sub[m]["mean"] for m in TABLE_METRICS}
            # share of the folds whose combiner kept each branch, and refitted (Combiner.select)
            entry["combiner"] = {k[len("combiner_"):]: v for k, v in result.summary.items()
                                 if k.startswith(("combiner_uses_", "combiner_refit"))}
        out["presets"][name] = entry
        if progress:
            progress(f"{name}: PR-AUC {entry['pr_auc']['mean']:.3f} in {wall:.0f} s")
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
    """The benchmark as a Markdown table (mean +/- std over repeats, 95 % CI of PR-AUC), then, for each vetter
    with several branches, a line with its branches' figures on the same folds, the fused PR-AUC per repeat
    and the share of folds whose combiner kept each branch (when the bench recorded it)."""
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
    notes = []
    for name, e in bench["presets"].items():
        branches = {k[len("branch_"):]: v for k, v in e.items() if k.startswith("branch_")}
        if branches:
            said = "; ".join(f"{b} PR-AUC {v['pr_auc']:.3f}, ROC-AUC {v['roc_auc']:.3f}" for b, v in branches.items())
            per_repeat = ", ".join(f"{v:.3f}" for v in e["pr_auc"]["per_repeat"])
            note = f"{name}'s branches on the same folds (mean over repeats): {said}. Fused PR-AUC per repeat: {per_repeat}."
            if e.get("combiner"):
                kept = ", ".join(f"{k[len('uses_'):]} {v:.0%}" for k, v in e["combiner"].items() if k.startswith("uses_"))
                note += (f" Folds whose combiner kept each branch: {kept}; refitted a logistic combiner: "
                         f"{e['combiner'].get('refit', float('nan')):.0%} (the others keep a branch as it is).")
            notes.append(note)
    return "\n".join(lines + ([""] + notes if notes else []))
