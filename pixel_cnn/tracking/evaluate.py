"""The headline metric the MLflow way: recall at a precision as an ``mlflow.models.make_metric``
custom metric, and ``mlflow.models.evaluate`` of out-of-fold predictions (issue 20, item 6).

The recall function is the one the promotion gate (:mod:`pixel_cnn.tracking.gate`, the only gate:
``MetricThreshold`` on pooled OOF PR-AUC and ``recall_at_p99_oof``) uses:
:func:`pixel_cnn.branches.tabular.recall_at_precision`. OOF predictions come from several fold models, so they are
evaluated as a static dataset (``predictions=`` a column): MLflow then computes its classifier
metrics and confusion matrix on the 0/1 prediction at a fixed threshold, and the scores
(recall at precision, average precision, ROC-AUC) come from the probability column through the
custom metrics here (MLflow's own ROC/PR plots need a model's ``predict_proba``).
"""

from __future__ import annotations

import inspect
import warnings

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import make_metric
from sklearn.metrics import average_precision_score, roc_auc_score

from pixel_cnn.branches.tabular import recall_at_precision


def metric_name(precision: float) -> str:
    """``0.99 -> "recall_at_precision_99"`` (the name logged by :func:`recall_at_precision_metric`)."""
    return f"recall_at_precision_{round(precision * 100):d}"


def _reading(fn, column: str):
    """``fn(targets, scores)`` as an eval_fn with arguments ``predictions, targets, <column>``: MLflow
    passes a metric function the dataset column named like its argument (three arguments: with
    two, MLflow would take the legacy ``(eval_df, builtin_metrics)`` form)."""
    def eval_fn(predictions, targets, values):
        return fn(targets, values)

    P = inspect.Parameter
    eval_fn.__signature__ = inspect.Signature([P("predictions", P.POSITIONAL_OR_KEYWORD),
                                               P("targets", P.POSITIONAL_OR_KEYWORD),
                                               P(column, P.POSITIONAL_OR_KEYWORD)])
    return eval_fn


def recall_at_precision_metric(precision: float = 0.99, scores: str = "predictions"):
    """``mlflow.models.make_metric`` of recall at ``precision`` (greater is better), named
    :func:`metric_name` (``recall_at_precision_99``).

    ``scores="predictions"``: the model's predictions ARE the scores (a model returning the
    probability of planet, ``model_type=None``). Any other value: the name of the dataset column
    holding the scores (static OOF datasets: ``predictions`` is then the 0/1 prediction).
    """
    def fn(targets, values):
        return recall_at_precision(targets, values, precision)

    if scores == "predictions":
        def from_predictions(predictions, targets):
            return fn(targets, predictions)
        return make_metric(eval_fn=from_predictions, greater_is_better=True, name=metric_name(precision))
    return make_metric(eval_fn=_reading(fn, scores), greater_is_better=True, name=metric_name(precision))


def score_metrics(scores: str = "probability") -> list:
    """Average precision (``average_precision_scores``) and ROC-AUC (``roc_auc_scores``) of the dataset
    column ``scores``, as ``make_metric`` metrics."""
    def ap(targets, values):
        return float(average_precision_score(np.asarray(targets).astype(int), np.asarray(values, float)))

    def roc(targets, values):
        return float(roc_auc_score(np.asarray(targets).astype(int), np.asarray(values, float)))

    return [make_metric(eval_fn=_reading(ap, scores), greater_is_better=True, name="average_precision_scores"),
            make_metric(eval_fn=_reading(roc, scores), greater_is_better=True, name="roc_auc_scores")]


def evaluate_oof(run_id: str, oof: pd.DataFrame, label: str = "label", probability: str = "probability",
                 threshold: float = 0.5, precisions=(0.99, 0.95)) -> dict[str, float]:
    """``mlflow.models.evaluate`` (``model_type="classifier"``) of OOF predictions into run ``run_id``.

    Parameters
    ----------
    oof : DataFrame with ``label`` (0/1) and ``probability`` (float) columns; other columns are
        left out of the evaluation table.
    threshold : the 0/1 prediction is ``probability >= threshold`` (fixed, never tuned on the data).

    Returns the evaluation's metrics (MLflow's classifier metrics at ``threshold`` and
    :func:`recall_at_precision_metric` for each precision, :func:`score_metrics`).

    Raises
    ------
    ValueError
        A column is missing or ``label`` is not 0/1 with both classes present.
    """
    for c in (label, probability):
        if c not in oof:
            raise ValueError(f"OOF table lacks column {c!r}")
    y = oof[label].to_numpy()
    if not set(np.unique(y)) == {0, 1}:
        raise ValueError(f"column {label!r} must hold both 0 and 1, got {sorted(set(np.unique(y)))}")
    data = pd.DataFrame({"probability": oof[probability].to_numpy(float), "label": y.astype(int),
                         "prediction": (oof[probability].to_numpy(float) >= threshold).astype(int)})
    metrics = [recall_at_precision_metric(p, scores="probability") for p in precisions] + score_metrics("probability")
    with warnings.catch_warnings(), mlflow.start_run(run_id=run_id, nested=bool(mlflow.active_run())):
        warnings.simplefilter("ignore")
        result = mlflow.models.evaluate(data=data, targets="label", predictions="prediction", model_type="classifier",
                                        extra_metrics=metrics,
                                        evaluator_config={"pos_label": 1, "log_model_explainability": False})
    return {k: float(v) for k, v in result.metrics.items()}
