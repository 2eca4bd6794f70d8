"""What a cv run logs: one nested child run per fold, the parent's summary, the ensemble.

Every call names its run id (``MlflowClient``), so nothing depends on MLflow's
fluent "active run".
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from pixel_cnn.drawing import explain
from pixel_cnn.evaluation.cv import CVCallbacks, CVResult, FoldOutcome, served_vetter
from pixel_cnn.vetter.ensemble import save_members
from pixel_cnn.evaluation.metrics import pr_roc_figure, reliability_figure
from pixel_cnn.vetter.networks import Preset
from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.tracking import registry
from pixel_cnn.tracking.served import log_vetter
from pixel_cnn.tracking.runs import (describe_run, log_dataset_input, log_df, log_figure, log_params_once,
                                     model_params, now_ms)

_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
#: The cv parent's headline metrics, logged under their plain names (``mlflow ui``'s first charts and
#: columns); per branch (``pr_auc_oof_pixel``, ...) for a vetter of several branches.
HEADLINE_METRICS = ("pr_auc_oof", "roc_auc_oof", "recall_at_p99_oof", "brier_oof", "threshold")
_BRANCH_HEADLINE = ("pr_auc_oof_", "roc_auc_oof_")


def logged_metric_name(key: str) -> str:
    """The name a cv summary figure (``CVResult.summary`` key) is logged under on the parent run.

    The headline (:data:`HEADLINE_METRICS`, and pooled PR-AUC/ROC-AUC per branch) keeps its plain
    name; the rest goes under a prefix that ``mlflow ui`` shows as its own chart section:
    ``folds/`` (fold means and stds ``pr_auc_mean``, ``pr_auc_std_fused``, ..., each validation
    fold's positive rate), ``combiner/`` (the combiner's mean coefficients) and ``oof/`` (every other
    pooled out-of-fold figure: ``accuracy_oof``, ``f1_oof``, intervals ``pr_auc_oof_ci_low``,
    repeat stds ``pr_auc_oof_std``, other branch figures, ``threshold_pixel``).
    """
    if key in HEADLINE_METRICS or (key.startswith(_BRANCH_HEADLINE) and "_std" not in key
                                   and "_ci_" not in key):
        return key
    if key.startswith("combiner_"):
        return f"combiner/{key}"
    if "_mean" in key or ("_std" in key and "_oof_std" not in key) or key.startswith("val_positive_rate"):
        return f"folds/{key}"
    return f"oof/{key}"


def add_recall_at_p99(summary: dict, oof: pd.DataFrame) -> None:
    """Add ``recall_at_p99_oof`` (fused) and, with several branches, ``recall_at_p99_oof_<branch>`` to
    ``summary``: the highest recall at precision >= 0.99 of the pooled OOF predictions of each repeat,
    mean over repeats (:func:`pixel_cnn.branches.tabular.recall_at_precision`)."""
    from pixel_cnn.branches.tabular import recall_at_precision

    columns = {"": "probability", **{f"_{c[len('probability_'):]}": c for c in oof if c.startswith("probability_")}}
    for suffix, column in columns.items():
        summary[f"recall_at_p99_oof{suffix}"] = float(np.mean(
            [recall_at_precision(g["label"], g[column], 0.99) for _, g in oof.groupby("repeat")]))


class MlflowCVCallbacks(CVCallbacks):
    """Logs each fold as a nested child run of ``parent_run_id``, by explicit run id.

    Per child: params (``repeat``, ``fold``, ``model.*``, fold sizes), per-epoch
    ``train_loss``/``val_loss`` (step = epoch), final metrics and ``threshold``,
    the validation predictions ``val_predictions.csv``, the fold's network as
    ``model/config.json`` + ``model/weights.pt`` (loadable with
    :meth:`pixel_cnn.vetter.ensemble.Ensemble.from_files`; the served model is the
    parent's ensemble of them) and, when the cv computed them
    (``run_cv(attributions=True)``), the attribution figure
    ``figures/attributions.png`` (:func:`log_attributions`). Each fold's PR and
    ROC curves are drawn once, with every other fold's, on the parent
    (``figures/pr_roc_folds.png``).
    """

    def __init__(self, parent_run_id: str, preset: Preset | None, log_models: bool = True):
        self.client = MlflowClient()
        self.parent = self.client.get_run(parent_run_id)
        self.preset = preset
        self.log_models = log_models
        self.child_ids: dict[tuple[int, int], str] = {}
        self._epochs: list[Metric] = []

    def fold_start(self, repeat, fold, info):
        run = self.client.create_run(
            self.parent.info.experiment_id,
            tags={MLFLOW_PARENT_RUN_ID: self.parent.info.run_id,
                  MLFLOW_RUN_NAME: f"repeat{repeat}-fold{fold}"},
        )
        self.child_ids[(repeat, fold)] = run.info.run_id
        params = {"repeat": repeat, "fold": fold, **(model_params(self.preset) if self.preset else {}), **info}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self._epochs = []

    def epoch_end(self, repeat, fold, epoch, losses):
        ts = now_ms()
        self._epochs += [Metric(k, float(v), ts, epoch) for k, v in losses.items()]

    def fold_end(self, repeat, fold, outcome: FoldOutcome):
        run_id = self.child_ids[(repeat, fold)]
        final = [Metric(k, v, now_ms(), 0) for k, v in
                 {**outcome.metrics, **(outcome.extra_metrics or {}), "threshold": outcome.threshold}.items()]
        metrics = self._epochs + final
        for i in range(0, len(metrics), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + _MAX_BATCH])
        branches = {f"probability_{n}": f.prob for n, f in outcome.fitted.items()} if len(outcome.fitted) > 1 else {}
        log_df(run_id, pd.DataFrame({"kepid": outcome.val_kepids, "label": outcome.val_labels,
                                     "probability": outcome.prob, **branches}), "val_predictions.csv")
        if outcome.attributions is not None:
            log_attributions(run_id, self.preset, outcome, f"repeat{repeat}-fold{fold}")
        if self.log_models and outcome.pixel is not None:
            with tempfile.TemporaryDirectory() as tmp:
                save_members(Path(tmp), self.preset, [outcome.pixel.model], outcome.thresholds["pixel"],
                             {"member_of": self.parent.info.run_id, "repeat": repeat, "fold": fold})
                self.client.log_artifacts(run_id, tmp, "model")
        self.client.set_terminated(run_id)


def log_attributions(run_id: str, preset: Preset, outcome: FoldOutcome, name: str) -> None:
    """Log ``figures/attributions.png``: each validation target's in-transit input beside its
    Integrated-Gradients map (``outcome.attributions``, :mod:`pixel_cnn.drawing.explain`), on run ``run_id``."""
    fig = explain.attribution_figure(
        outcome.val_inputs, outcome.attributions, outcome.val_kepids, outcome.val_labels, outcome.pixel.prob,
        n_maps=preset.in_channels - preset.n_scalars,
        title=f"{name}: input channel 0 | Integrated Gradients ({explain.ATTRIBUTION_MEANING})")
    log_figure(run_id, fig, "figures/attributions.png")


def log_cv_summary(run_id: str, result: CVResult) -> None:
    """Parent-run metrics (``_mean``, ``_std``, ``_oof``, ``threshold``), OOF table and figures."""
    client = MlflowClient()
    ts = now_ms()
    rates = {f"val_positive_rate_r{f.repeat}_f{f.fold}": f.positive_rate for f in result.folds}
    client.log_batch(run_id, metrics=[Metric(logged_metric_name(k), v, ts, 0)
                                      for k, v in {**result.summary, **rates}.items()])
    log_df(run_id, result.oof, "oof_predictions.csv")
    folds = pd.DataFrame([(k, f.repeat, f.fold) for f in result.folds for k in f.val_kepids],
                         columns=["kepid", "repeat", "fold"])
    log_df(run_id, folds.sort_values(["repeat", "kepid"]), "fold_assignment.csv")
    first = result.oof[result.oof["repeat"] == 0]
    curves = [(f"fold {k}", g["label"].to_numpy(), g["probability"].to_numpy()) for k, g in first.groupby("fold")]
    curves.insert(0, ("pooled OOF", first["label"].to_numpy(), first["probability"].to_numpy()))
    log_figure(run_id, pr_roc_figure(curves, f"{result.vetter}: out-of-fold, repeat 0"),
                "figures/pr_roc_folds.png")
    oof = result.oof
    log_figure(run_id, reliability_figure(
        [(f"pooled OOF, {oof['repeat'].nunique()} repeat(s)", oof["label"].to_numpy(), oof["probability"].to_numpy())],
        title=f"{result.vetter}: reliability, out-of-fold"), "figures/reliability.png")
    client.log_dict(run_id, {"vetter": result.vetter, "branches": {b.name: b.describe() for b in result.branches}},
                    "config.json")


def log_mistakes(run_id: str, folder, worst: pd.DataFrame) -> None:
    """Log the vetting sheets of the worst out-of-fold calls, ``folder/figures/mistakes/*.png``, and their table."""
    log_df(run_id, worst, "figures/mistakes/mistakes.csv")
    MlflowClient().log_artifacts(run_id, str(Path(folder) / "figures" / "mistakes"), "figures/mistakes")


def branch_lines(result: CVResult) -> str:
    """Markdown lines with each branch's pooled OOF PR-AUC and ROC-AUC side by side ("" for one branch)."""
    s = result.summary
    names = [b.name for b in result.branches]
    if len(names) < 2:
        return ""
    rows = [f"| {b} | {s[f'pr_auc_oof_{b}']:.3f} | {s[f'roc_auc_oof_{b}']:.3f} |"
            for b in [*names, "fused"] if f"pr_auc_oof_{b}" in s]
    return ("\nEach branch, pooled OOF:\n\n| branch | PR-AUC (average precision) | ROC-AUC |\n|---|---|---|\n"
            + "\n".join(rows) + "\n")


def log_cv_description(run_id: str, text: str, roc_interval: tuple[float, float]) -> None:
    """The run's description (headline figures) and the pooled-OOF ROC-AUC interval as metrics."""
    MlflowClient().log_batch(run_id, metrics=[
        Metric(logged_metric_name("roc_auc_oof_ci_low"), roc_interval[0], now_ms(), 0),
        Metric(logged_metric_name("roc_auc_oof_ci_high"), roc_interval[1], now_ms(), 0)])
    describe_run(run_id, text)


def log_cv_inputs(run_id: str, dataset: Dataset, info: dict, vetter: str, preset: Preset | None) -> None:
    """Record what cv trained on: the dataset (digest) and the prep run behind it; the vetter's
    name (tag ``preset``) and its pixel network's configuration (params ``model.*``)."""
    client = MlflowClient()
    tags = {"dataset_digest": dataset.digest, "preset": vetter}
    if info.get("prep_run_id"):
        tags["prep_run_id"] = info["prep_run_id"]
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    if preset is not None:
        log_params_once(run_id, model_params(preset))
    log_dataset_input(run_id, dataset, info.get("source", ""), "kepler-pixdiff", "training")


def version_description(run_id: str, result: CVResult, dataset_digest: str, koi_digest: str = "") -> str:
    """The registered version's description (Markdown, the version page of ``mlflow ui``): the preset,
    the headline figures (pooled OOF; per branch for a fusion vetter), the dataset digest and a link to
    the cv run."""
    client = MlflowClient()
    run = client.get_run(run_id)
    s = result.summary
    link = f"[{run.info.run_name}](#/experiments/{run.info.experiment_id}/runs/{run_id})"
    lines = [f"**{result.vetter}** vetter, cross-validated by cv run {link} (run id `{run_id}`).", "",
             "| pooled out-of-fold (OOF) | value |", "|---|---|",
             f"| PR-AUC (average precision) | **{s['pr_auc_oof']:.3f}** (95 % bootstrap "
             f"{s['pr_auc_oof_ci_low']:.3f}-{s['pr_auc_oof_ci_high']:.3f}) |",
             f"| ROC-AUC | {s['roc_auc_oof']:.3f} |"]
    if "recall_at_p99_oof" in s:
        lines.append(f"| recall at precision 0.99 | {s['recall_at_p99_oof']:.3f} |")
    lines += [f"| Brier score | {s['brier_oof']:.3f} |", f"| threshold | {s['threshold']:.3f} |", ""]
    names = [b.name for b in result.branches]
    if len(names) > 1:
        lines.append("Per branch, pooled OOF: " + "; ".join(
            f"{b} PR-AUC {s[f'pr_auc_oof_{b}']:.3f}, ROC-AUC {s[f'roc_auc_oof_{b}']:.3f}"
            for b in [*names, "fused"] if f"pr_auc_oof_{b}" in s) + ".")
        lines.append("")
    lines.append(f"Dataset digest `{dataset_digest}`" + (f", KOI table digest `{koi_digest}`" if koi_digest else "")
                 + ".")
    return "\n".join(lines) + "\n"


def version_tags(run_id: str, result: CVResult, dataset_digest: str, koi_digest: str = "") -> dict[str, str]:
    """The registered version's tags: headline figures (4 decimals), preset, cv run, dataset digests."""
    keys = [k for k in ("pr_auc_oof", "roc_auc_oof", "recall_at_p99_oof", "brier_oof", "threshold")
            if k in result.summary]
    keys += [k for k in result.summary if k.startswith(_BRANCH_HEADLINE) and logged_metric_name(k) == k]
    tags = {key: f"{result.summary[key]:.4f}" for key in keys}
    tags.update(preset=result.vetter, cv_run_id=run_id, dataset_digest=dataset_digest)
    if koi_digest:
        tags["koi_table_digest"] = koi_digest
    return tags


def log_vetter_model(run_id: str, result: CVResult, seed: int, register: bool, alias: str,
                     input_example: np.ndarray | None, dataset_digest: str, is_default_cv: bool = False):
    """Log the cv's vetter (:func:`pixel_cnn.evaluation.cv.served_vetter`) as ``model`` of the parent run;
    optionally register it.

    With ``register`` a new version of ``pixel-cnn`` is created with its headline figures, preset
    and dataset digests as tags and a description (:func:`version_tags`, :func:`version_description`),
    and the alias is chosen by the champion policy
    (:func:`pixel_cnn.tracking.registry.register_cv_version`: ``auto`` moves ``@champion`` only for
    ``make cv``'s default run, ``is_default_cv``). Returns ``(model_info, registration)`` with
    ``registration`` None or ``{"version", "alias", "champion", "reason"}``.
    """
    config, pixel, tabular_model, catalogue = served_vetter(result, seed, {
        "cv_run_id": run_id, "dataset_digest": dataset_digest,
        "pr_auc_oof": result.summary["pr_auc_oof"], "roc_auc_oof": result.summary["roc_auc_oof"]})
    model_info = log_vetter(run_id, config, pixel, tabular_model, input_example=input_example, catalogue=catalogue)
    registration = None
    if register:
        koi = MlflowClient().get_run(run_id).data.tags.get("koi_table_digest", "")
        registration = registry.register_cv_version(
            model_info, version_tags(run_id, result, dataset_digest, koi), alias, is_default_cv,
            description=version_description(run_id, result, dataset_digest, koi))
    return model_info, registration
