"""Feature study: hand-made vetting features with linear and tree models, same folds as cv.

Every variant below was declared before the first run (4 feature sets x 3 models x
2 training sets = 24 variants); all are reported, in that order, whatever they score.
Nothing is tuned on the validation folds: the only choice made from data is the
logistic regression's C in ``lr_inner_c``, picked by an inner grouped 3-fold cv on
each outer fold's training targets.

* folds: :func:`pixel_cnn.evaluation.cv.plan_splits` (seed 42, repeat ``r`` = seed 42 + r,
  ``StratifiedGroupKFold`` grouped by kepid), the folds every preset sees in ``cv``.
* features: in-stack only (:func:`pixel_cnn.vetter.vetting.vetting_features` and the 6
  scalars of the ``phase`` representation); no KOI-table column ever enters.
* ``extra=koi``: the stacks that have a KOI disposition (``prepare_dataset(labels="koi")``)
  but are not benchmark targets join every *training* fold; they are never scored.

Usage: ``python bench/feature_study.py [--repeats 5] [--out bench/results/feature_study.json]``.
Prints a table; runs in well under 2 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from pixel_cnn.evaluation.cv import plan_splits  # noqa: E402
from pixel_cnn.io.dataset import prepare_dataset  # noqa: E402
from pixel_cnn.evaluation.metrics import bootstrap_pr_auc  # noqa: E402
from pixel_cnn.vetter.representation import PHASE_SCALARS, phase_maps  # noqa: E402
from pixel_cnn.vetter.stack import validate_stack  # noqa: E402
from pixel_cnn.vetter.vetting import VETTING_FEATURES, vetting_features  # noqa: E402

PHASE6 = tuple(f"phase.{n}" for n in PHASE_SCALARS)
#: The pre-declared feature sets, in the order evaluated.
FEATURE_SETS = {
    # the 6 scalars of the `phase` preset: the baseline to beat
    "phase6": PHASE6,
    # the handful: in-transit depth, secondary depth, their ratio, SNR,
    # offset of the deepest pixel from the stamp centre (aperture photometry)
    "issue5": ("ap_depth", "ap_secondary_snr", "ap_sec_ratio", "ap_snr", "phase.offset_centre"),
    # every new vetting statistic
    "vetting14": VETTING_FEATURES,
    # both
    "vetting14+phase6": VETTING_FEATURES + PHASE6,
}
#: C grid of the inner search (log-spaced around sklearn's default 1).
C_GRID = (0.01, 0.1, 1.0, 10.0)
INNER_FOLDS = 3


def features_table(stacks) -> tuple[np.ndarray, list[str]]:
    """``(N, 20)`` float64: the 14 vetting features then the 6 ``phase`` scalars, and the names."""
    rows = []
    for s in stacks:
        s = validate_stack(s)
        rows.append(np.concatenate([vetting_features(s), phase_maps(s)[1]]))
    return np.asarray(rows, dtype=np.float64), list(VETTING_FEATURES + PHASE6)


def make_model(kind: str, seed: int):
    """An unfitted estimator: ``lr`` (C=1), ``lr_inner_c`` (C by inner grouped cv) or ``hgb``."""
    if kind == "lr":
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if kind == "lr_inner_c":
        return GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            {"logisticregression__C": list(C_GRID)}, scoring="average_precision",
            cv=StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=seed),
        )
    if kind == "hgb":
        return HistGradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown model {kind!r}")


def oof_scores(x, y, kepids, splits, kind, x_extra=None, y_extra=None, kepids_extra=None):
    """Pooled out-of-fold probabilities ``(repeats, N)`` of one variant over ``splits``."""
    probs = np.empty((len(splits), len(y)))
    for r, folds in splits.items():
        for k, (tr, va) in enumerate(folds):
            xt, yt, gt = x[tr], y[tr], kepids[tr]
            if x_extra is not None:
                xt, yt, gt = (np.concatenate([xt, x_extra]), np.concatenate([yt, y_extra]),
                              np.concatenate([gt, kepids_extra]))
            seed = 42 + 1000 * r + k
            model = make_model(kind, seed)
            if kind == "lr_inner_c":
                model.fit(xt, yt, groups=gt)
            else:
                model.fit(xt, yt)
            probs[r, va] = model.predict_proba(x[va])[:, 1]
    return probs


def fast_ap(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision as ``sklearn.metrics.average_precision_score`` (ties grouped), in numpy.

    ``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds, highest first.
    """
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]       # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / tp[-1]
    return float((recall_step * precision).sum())


def bootstrap_ap(y: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 42) -> tuple[float, float]:
    """95 % percentile bootstrap of the mean-over-repeats AP: :func:`pixel_cnn.evaluation.metrics.bootstrap_pr_auc`
    (same draws for one seed) scored with :func:`fast_ap`, so that 24 variants fit in the time budget."""
    return bootstrap_pr_auc(y, probs, n_boot=n_boot, seed=seed, score=fast_ap)


def summarize(y, probs) -> dict:
    ap = [average_precision_score(y, p) for p in probs]
    roc = [roc_auc_score(y, p) for p in probs]
    low, high = bootstrap_ap(y, probs)
    return {"pr_auc": {"mean": float(np.mean(ap)), "std": float(np.std(ap, ddof=1)), "per_repeat": ap},
            "roc_auc": {"mean": float(np.mean(roc)), "std": float(np.std(roc, ddof=1)), "per_repeat": roc},
            "pr_auc_ci95": [low, high]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(PROJECT / "bench/results/feature_study.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()

    bench = prepare_dataset(None, "seed")
    koi = prepare_dataset(None, "koi")
    extra_ids = np.setdiff1d(koi.kepids, bench.kepids)
    extra_mask = np.isin(koi.kepids, extra_ids)
    x, names = features_table(bench.stack_list())
    y, kepids = bench.labels, bench.kepids
    x_koi, _ = features_table(koi.stack_list())
    x_extra, y_extra, k_extra = x_koi[extra_mask], koi.labels[extra_mask], koi.kepids[extra_mask]
    splits = plan_splits(kepids, y, 5, args.seed, args.repeats, inner_folds=0)

    univariate = {n: float(roc_auc_score(y, x[:, i])) for i, n in enumerate(names)}
    variants = []
    for extra in ("none", "koi"):
        for set_name, cols in FEATURE_SETS.items():
            idx = [names.index(c) for c in cols]
            for kind in ("lr", "lr_inner_c", "hgb"):
                ex = (x_extra[:, idx], y_extra, k_extra) if extra == "koi" else (None, None, None)
                probs = oof_scores(x[:, idx], y, kepids, splits, kind, *ex)
                variants.append({"features": set_name, "model": kind, "extra_train": extra,
                                 **summarize(y, probs)})
                v = variants[-1]
                print(f"{len(variants):2d} {set_name:18s} {kind:11s} extra={extra:4s} "
                      f"PR-AUC {v['pr_auc']['mean']:.3f} +/- {v['pr_auc']['std']:.3f}  "
                      f"ROC-AUC {v['roc_auc']['mean']:.3f} +/- {v['roc_auc']['std']:.3f}  "
                      f"CI {v['pr_auc_ci95'][0]:.3f}-{v['pr_auc_ci95'][1]:.3f}", flush=True)
    out = {
        "protocol": {"folds": "pixel_cnn.evaluation.cv.plan_splits (StratifiedGroupKFold by kepid)", "n_folds": 5,
                     "seed": args.seed, "repeats": args.repeats, "c_grid": list(C_GRID),
                     "inner_folds": INNER_FOLDS, "pr_auc": "average precision, pooled OOF per repeat"},
        "n_targets": int(len(y)), "positive_rate": float(y.mean()),
        "n_extra_train": int(len(y_extra)), "extra_train_positive": int(y_extra.sum()),
        "feature_sets": {k: list(v) for k, v in FEATURE_SETS.items()},
        "univariate_roc_auc_all_97": univariate,
        "variants": variants,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} in {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
