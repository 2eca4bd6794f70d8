"""The champion gate: a registered version replaces ``@champion`` only when its cv scores are better.

Both versions are evaluated with MLflow's own evaluation API on the out-of-fold (OOF) predictions
their cv logged (``oof_predictions.csv`` of the version's ``cv_run_id``), as static datasets
(``mlflow.models.evaluate(data=..., predictions="probability", targets="label")``): no model is
run again, the figures are the cv's. The metrics (:func:`gate_metrics`, ``mlflow.models.make_metric``)
are pooled over the folds of each repeat and averaged over repeats, exactly as cv's headline
``pr_auc_oof`` (:func:`pixel_cnn.evaluation.cv.repeat_scores`):

- ``pr_auc_oof``: average precision (scikit-learn ``average_precision_score``), the gate's metric;
- ``roc_auc_oof``: ROC-AUC (``roc_auc_score``);
- ``recall_at_p99_oof``: the highest recall at precision >= 0.99
  (:func:`pixel_cnn.branches.tabular.recall_at_precision`, the operating point of Shallue &
  Vanderburg 2018 and Valizadegan et al. 2022);
- ``brier_oof``: Brier score (``brier_score_loss``; lower is better).

The decision is ``mlflow.validate_evaluation_results`` with :func:`gate_thresholds` (``MetricThreshold``):
the challenger's pooled OOF PR-AUC must beat the champion's by at least :data:`MIN_GAIN`, and its recall
at precision 0.99 (the headline operating point of issue 20, the ``make_metric`` ``recall_at_p99_oof``)
must be at least the champion's. This is the one promotion gate; the benchmarks' evaluations
(:mod:`pixel_cnn.tracking.evaluate`) use the same recall function. Two versions cross-validated
on different datasets (their ``dataset_digest`` tags differ) are not comparable: the gate refuses.
The evaluations are logged as runs of the experiment :data:`EXPERIMENT_GATE` (one parent per decision,
one nested run per version), so every promotion decision is on record.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import MetricThreshold, make_metric
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from pixel_cnn.branches.tabular import recall_at_precision

EXPERIMENT_GATE = "pixel-cnn-promote"
#: The smallest gain in pooled OOF PR-AUC that moves ``@champion`` (the tags keep 4 decimals).
MIN_GAIN = 1e-4
#: The gate's PR-AUC part, as an MLflow model-validation threshold (:func:`gate_thresholds` adds recall).
THRESHOLDS = {"pr_auc_oof": MetricThreshold(min_absolute_change=MIN_GAIN, greater_is_better=True)}
#: The recall metric of the gate: the challenger's may not fall below the champion's.
RECALL = "recall_at_p99_oof"


def gate_thresholds(champion_recall: float | None) -> dict:
    """The gate as ``MetricThreshold``s: :data:`THRESHOLDS` and, when the champion's recall at precision 0.99
    is known, ``recall_at_p99_oof >= champion_recall`` (``MetricThreshold(threshold=...)``; MLflow's
    ``min_absolute_change`` must be positive, so "not worse" is an absolute threshold at the champion's value)."""
    out = dict(THRESHOLDS)
    if champion_recall is not None:
        out[RECALL] = MetricThreshold(threshold=float(champion_recall), greater_is_better=True)
    return out
#: The figures shown side by side (name, label, greater is better).
HEADLINE = (("pr_auc_oof", "PR-AUC (average precision), pooled OOF", True),
            ("roc_auc_oof", "ROC-AUC, pooled OOF", True),
            ("recall_at_p99_oof", "recall at precision 0.99, pooled OOF", True),
            ("brier_oof", "Brier score, pooled OOF", False))


def _pooled(fn):
    """``fn(y, p)`` pooled within each repeat, mean over repeats (a ``make_metric`` ``eval_fn``)."""

    def eval_fn(predictions, targets, metrics=None, repeat=None):
        y = np.asarray(targets).astype(int)
        p = np.asarray(predictions, dtype=np.float64)
        rep = np.zeros(len(y), int) if repeat is None else np.asarray(repeat).astype(int)
        return float(np.mean([fn(y[rep == r], p[rep == r]) for r in np.unique(rep)]))

    return eval_fn


def gate_metrics() -> list:
    """The gate's metrics as ``mlflow.models.make_metric`` objects (see the module docstring)."""
    return [
        make_metric(eval_fn=_pooled(average_precision_score), greater_is_better=True, name="pr_auc_oof",
                    long_name="average precision of the pooled out-of-fold predictions, mean over repeats"),
        make_metric(eval_fn=_pooled(roc_auc_score), greater_is_better=True, name="roc_auc_oof"),
        make_metric(eval_fn=_pooled(lambda y, p: recall_at_precision(y, p, 0.99)), greater_is_better=True,
                    name="recall_at_p99_oof", long_name="highest recall at precision >= 0.99, pooled OOF"),
        make_metric(eval_fn=_pooled(brier_score_loss), greater_is_better=False, name="brier_oof"),
    ]


class GateError(ValueError):
    """A version the gate cannot evaluate (no cv run, no OOF predictions); the message names it."""


@dataclass
class Evaluated:
    """One registered version as the gate saw it."""

    version: str
    tags: dict
    metrics: dict = field(default_factory=dict)
    result: object = None  # mlflow EvaluationResult, None when only the version tags were available

    @property
    def preset(self) -> str:
        return self.tags.get("preset", "?")


def oof_predictions(tags: dict, name: str, version: str) -> pd.DataFrame:
    """The OOF predictions (``label``, ``probability``, ``repeat``) of the cv run behind a version.

    Raises
    ------
    GateError
        The version has no ``cv_run_id`` tag or its run has no ``oof_predictions.csv``.
    """
    run_id = tags.get("cv_run_id")
    if not run_id:
        raise GateError(f"{name} version {version} has no cv_run_id tag: not registered by cv")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="oof_predictions.csv",
                                                       dst_path=tmp)
        except Exception as exc:  # noqa: BLE001 - any store error: one line naming the run
            raise GateError(f"{name} version {version}: cv run {run_id} has no oof_predictions.csv "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        oof = pd.read_csv(path)
    if "repeat" not in oof:
        oof["repeat"] = 0
    return oof[["label", "probability", "repeat"]]


def evaluate_version(name: str, version: str, tags: dict, role: str) -> Evaluated:
    """``mlflow.models.evaluate`` of one version's OOF predictions, in a nested run named after it.

    Falls back to the version's score tags (``pr_auc_oof`` ...) when its OOF predictions are not
    available (a version registered by hand or by an older release): ``result`` is then None.
    """
    try:
        oof = oof_predictions(tags, name, version)
    except GateError:
        metrics = {k: float(tags[k]) for k, _, _ in HEADLINE if k in tags}
        return Evaluated(version, tags, metrics)
    with mlflow.start_run(run_name=f"{role} v{version} ({tags.get('preset', '?')})", nested=True), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        # MLflow first tries each custom metric on the first row alone (one class): scikit-learn's warnings
        # of that probe are not about the OOF predictions, which hold both classes
        warnings.filterwarnings("ignore", message=".*(No positive class found|Only one class is present).*")
        mlflow.set_tags({"model_version": version, "role": role, "cv_run_id": tags.get("cv_run_id", ""),
                         "preset": tags.get("preset", "")})
        result = mlflow.models.evaluate(data=oof, predictions="probability", targets="label",
                                        extra_metrics=gate_metrics(), evaluators="default")
    return Evaluated(version, tags, {k: float(v) for k, v in result.metrics.items()}, result)


def decide(name: str, challenger: Evaluated, champion: Evaluated | None) -> tuple[bool, str]:
    """Whether ``challenger`` passes the gate against ``champion``, and why (one line)."""
    if champion is None:
        return True, "no @champion yet"
    if champion.version == challenger.version:
        return False, "the challenger is already @champion"
    d_chal, d_champ = challenger.tags.get("dataset_digest"), champion.tags.get("dataset_digest")
    if d_chal and d_champ and d_chal != d_champ:
        return False, (f"not comparable: cross-validated on different datasets (digest {d_chal[:12]} vs "
                       f"{d_champ[:12]}); re-run cv of both on one dataset")
    new, old = challenger.metrics.get("pr_auc_oof"), champion.metrics.get("pr_auc_oof")
    if new is None or old is None:
        missing = challenger.version if new is None else champion.version
        raise GateError(f"{name} version {missing} has no pooled OOF PR-AUC (no OOF predictions, no "
                        "pr_auc_oof tag): register it with the cv or tune entry point")
    r_new, r_old = challenger.metrics.get(RECALL), champion.metrics.get(RECALL)
    recall_known = r_new is not None and r_old is not None
    recall_txt = f"; recall at precision 0.99 {r_new:.4f} vs {r_old:.4f}" if recall_known else ""
    if challenger.result is not None and champion.result is not None:
        try:
            mlflow.validate_evaluation_results(gate_thresholds(r_old), challenger.result, champion.result)
        except mlflow.models.evaluation.validation.ModelValidationFailedException:
            if new < old + MIN_GAIN:
                return False, f"pooled OOF PR-AUC {new:.4f} is not above {old:.4f} + {MIN_GAIN:g}{recall_txt}"
            return False, f"recall at precision 0.99 {r_new:.4f} is below the champion's {r_old:.4f}"
        return True, (f"pooled OOF PR-AUC {new:.4f} > {old:.4f} + {MIN_GAIN:g}{recall_txt} "
                      "(mlflow.validate_evaluation_results)")
    # scores from version tags only: the same rule
    if new < old + MIN_GAIN:
        return False, f"pooled OOF PR-AUC {new:.4f} is not above {old:.4f} + {MIN_GAIN:g} (version tags)"
    if recall_known and r_new < r_old:
        return False, f"recall at precision 0.99 {r_new:.4f} is below the champion's {r_old:.4f} (version tags)"
    return True, f"pooled OOF PR-AUC {new:.4f} > {old:.4f} + {MIN_GAIN:g}{recall_txt} (version tags)"


def run_gate(name: str, challenger: tuple[str, dict], champion: tuple[str, dict] | None):
    """Evaluate ``challenger`` (and ``champion``) and decide, logged as one run of :data:`EXPERIMENT_GATE`.

    ``challenger``/``champion`` are ``(version, version tags)``. Returns
    ``(passed, reason, Evaluated challenger, Evaluated champion or None)``.

    Raises
    ------
    GateError
        A version has neither OOF predictions nor a ``pr_auc_oof`` tag.
    """
    from pixel_cnn.tracking.runs import mark_training_experiment, set_experiment

    saved = os.environ.get("MLFLOW_EXPERIMENT_ID")
    mark_training_experiment(set_experiment(EXPERIMENT_GATE) or mlflow.get_experiment_by_name(EXPERIMENT_GATE).experiment_id)
    title = f"gate v{challenger[0]}" + (f" vs @champion v{champion[0]}" if champion else "")
    with mlflow.start_run(run_name=title) as run:
        chal = evaluate_version(name, challenger[0], challenger[1], "challenger")
        champ = evaluate_version(name, champion[0], champion[1], "champion") if champion else None
        passed, reason = decide(name, chal, champ)
        mlflow.set_tags({"challenger_version": chal.version, "champion_version": champ.version if champ else "",
                         "passed": str(passed).lower(), "mlflow.note.content": f"{title}: "
                         + ("passed" if passed else "not passed") + f" ({reason})"})
    if saved is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    return passed, reason, chal, champ, run.info.run_id
