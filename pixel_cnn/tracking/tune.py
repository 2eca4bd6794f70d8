"""MLflow side of tuning: one child run per trial, the study summary on the parent.

Every call goes through ``MlflowClient`` with an explicit run id, so trials
running at the same time (in worker processes) never share MLflow's fluent
"active run".

optuna-integration's ``MLflowCallback`` is not used (and the package is not a
dependency of the project). It is deprecated since
optuna-integration 4.9.0 (removal planned for 6.0.0; optuna-integration PR
#281), it logs through the fluent active run (``mlflow.start_run``), and it
opens a trial's run only once the trial has ended, so per-fold scores could
not stream and a running trial would be invisible. The tags it sets
(``number``, ``state``, ``direction``, ``datetime_start``, ``datetime_complete``,
``<param>_distribution``) are kept under the same names, and the trial state
maps to a run status as in MLflow's own ``mlflow.optuna`` storage (PRUNED ->
KILLED).
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.optuna.storage import optuna_mlflow_status_map
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from pixel_cnn.tracking.runs import EXPERIMENT_TUNE, log_df, log_params_once, model_params, now_ms
from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.vetter.networks import Preset
from pixel_cnn.search.tuning import GROUP_ATTR, TuneHooks

#: Trial user attributes linking the Optuna storage to MLflow: the trial's own run, and the
#: parent run it was run for (the group a worker's target counts, :data:`GROUP_ATTR`).
RUN_ID_ATTR, PARENT_ATTR = "mlflow_run_id", GROUP_ATTR
_TAG_MAX = 5000
#: Complete trials below which the parameter-importance figure is skipped: fANOVA on a
#: handful of trials says nothing (3 trials gave every one of the 6 parameters 0.17 = 1/6).
#: 10 = TPE's random start-up trials (``n_startup_trials``), before which nothing is modelled.
MIN_IMPORTANCE_TRIALS = 10


def _metrics(values: dict, step: int = 0) -> list[Metric]:
    ts = now_ms()
    return [Metric(k, float(v), ts, step) for k, v in values.items()]


class TrialLogger(TuneHooks):
    """Logs each trial as a child run of ``parent_run_id`` (``mlflow.parentRunId`` tag).

    A child gets, at trial start: the searched params as sampled, the resolved
    preset (``model.*``), ``fixed_params`` and Optuna's tags; after each fold:
    ``pr_auc``, ``roc_auc`` (the fold's own) and ``running_pr_auc_oof`` (the pooled
    out-of-fold PR-AUC of the folds done so far, what the pruner sees; step = fold); at the
    end: ``value`` (the objective, pooled OOF PR-AUC) for complete trials, the cv
    summary, tag ``state`` (COMPLETE / PRUNED / FAIL) and run status FINISHED /
    KILLED / FAILED. The child's run id is stored in the trial's user attribute
    ``mlflow_run_id``. The client is made lazily (and not pickled).
    """

    def __init__(self, parent_run_id: str, study_name: str, fixed_params: dict | None = None,
                 tracking_uri: str | None = None):
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.parent_run_id, self.study_name = parent_run_id, study_name
        self.fixed_params = dict(fixed_params or {})
        self.experiment_id = self.client.get_run(parent_run_id).info.experiment_id

    @property
    def client(self) -> MlflowClient:
        if getattr(self, "_client", None) is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_client", None)
        return state

    def trial_start(self, trial: optuna.Trial, params: dict, preset: Preset, worker: int) -> None:
        run = self.client.create_run(self.experiment_id, tags={
            MLFLOW_PARENT_RUN_ID: self.parent_run_id, MLFLOW_RUN_NAME: f"trial-{trial.number}",
            "optuna.study_name": self.study_name, "optuna.worker": str(worker),
            "number": str(trial.number), "state": "RUNNING", "direction": "MAXIMIZE",
        })
        run_id = run.info.run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        trial.set_user_attr(PARENT_ATTR, self.parent_run_id)
        all_params = {**params, **model_params(preset), **self.fixed_params}
        dists = {f"{k}_distribution": str(v)[:_TAG_MAX] for k, v in trial.distributions.items()}
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in all_params.items()],
                              tags=[RunTag(k, v) for k, v in dists.items()])

    def fold_end(self, trial: optuna.Trial, step: int, metrics: dict, running_pr_auc_oof: float) -> None:
        run_id = trial.user_attrs[RUN_ID_ATTR]
        values = {"pr_auc": metrics["pr_auc"], "roc_auc": metrics["roc_auc"],
                  "running_pr_auc_oof": running_pr_auc_oof}
        self.client.log_batch(run_id, metrics=_metrics(values, step))

    def trial_error(self, trial: optuna.Trial, exc: BaseException) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            self.client.log_batch(run_id, tags=[RunTag("state", "FAIL"),
                                                RunTag("error", repr(exc)[:_TAG_MAX])])
            self.client.set_terminated(run_id, "FAILED")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna study callback: close the trial's run with its outcome."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:  # not started by this logger
            return
        metrics = {k: v for k, v in trial.user_attrs.items() if isinstance(v, float)}
        if trial.state == optuna.trial.TrialState.COMPLETE:
            # Optuna gives a pruned trial its last running value as value: not the objective, not logged.
            metrics["value"] = trial.value
        if trial.duration is not None:
            metrics["duration_s"] = trial.duration.total_seconds()
        tags = {"state": trial.state.name, "datetime_start": str(trial.datetime_start),
                "datetime_complete": str(trial.datetime_complete)}
        if trial.state == optuna.trial.TrialState.PRUNED:
            tags["pruned_at_fold"] = str(trial.last_step)
        self.client.log_batch(run_id, metrics=_metrics(metrics),
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, optuna_mlflow_status_map[trial.state])


# ---------------------------------------------------------------- parent run


def log_tune_inputs(run_id: str, config: dict, dataset: Dataset, info: dict) -> None:
    """Record on the parent run what the study searched on: config, storage, dataset."""
    client = MlflowClient()
    tags = {"optuna.study_name": config["study_name"], "optuna.storage": config["storage"],
            "dataset_digest": dataset.digest, "preset": config["preset"]}
    if info.get("prep_run_id"):
        tags["prep_run_id"] = info["prep_run_id"]
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    log_params_once(run_id, {k: v for k, v in config.items() if k != "storage"})


def _figure_of(axes) -> plt.Figure:
    return np.atleast_1d(axes).flat[0].figure


def study_figures(study: optuna.Study) -> tuple[dict[str, plt.Figure], dict[str, str]]:
    """Optuna's matplotlib figures of a study: ``({artifact path: figure}, {path: why skipped})``.

    Optimization history, parameter importances (fANOVA, Optuna's default
    evaluator) when at least :data:`MIN_IMPORTANCE_TRIALS` trials completed, slice plots
    of dropout and lr, and a dropout x lr contour when at least 2 trials completed. Every
    figure not drawn is in the second dict with the reason: too few complete trials (the
    count is in the reason), or the error Optuna raised.
    """
    from optuna.visualization import matplotlib as ovm

    n_complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    plots = {
        "figures/optimization_history.png": lambda: ovm.plot_optimization_history(study),
        "figures/param_importances.png": lambda: ovm.plot_param_importances(study),
        "figures/slice_dropout_lr.png": lambda: ovm.plot_slice(study, params=["dropout", "lr"]),
        "figures/contour_dropout_lr.png": lambda: ovm.plot_contour(study, params=["dropout", "lr"]),
    }
    skipped = {}
    if n_complete < MIN_IMPORTANCE_TRIALS:
        skipped["figures/param_importances.png"] = (
            f"{n_complete} complete trial(s); parameter importances (fANOVA) need at least "
            f"{MIN_IMPORTANCE_TRIALS} to mean anything")
    if n_complete < 2:
        skipped["figures/contour_dropout_lr.png"] = (
            f"{n_complete} complete trial(s); a dropout x lr contour needs at least 2")
    if n_complete < 1:
        for path in ("figures/optimization_history.png", "figures/slice_dropout_lr.png"):
            skipped[path] = "no complete trial"
    plots = {path: plot for path, plot in plots.items() if path not in skipped}
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for path, plot in plots.items():
            try:
                figures[path] = _figure_of(plot())
            except (ValueError, RuntimeError) as exc:
                skipped[path] = str(exc)
    return figures, skipped


def log_study_summary(run_id: str, study: optuna.Study, wall_s: float) -> dict:
    """Best params / value, trial counts, trials table and figures on the parent run.

    Counts: ``n_trials_<state>`` over the whole study and ``run_trials_<state>``
    over the trials started under this parent. Returns ``{"best_value",
    "best_params", "best_trial", "best_run_id", "counts"}`` (best_* None when no
    trial completed).
    """
    client = MlflowClient()
    trials = study.get_trials(deepcopy=False)
    mine = [t for t in trials if t.user_attrs.get(PARENT_ATTR) == run_id]
    counts = {}
    for prefix, group in (("n_trials", trials), ("run_trials", mine)):
        counts[prefix] = len(group)
        for state in ("COMPLETE", "PRUNED", "FAIL"):
            counts[f"{prefix}_{state.lower()}"] = sum(t.state.name == state for t in group)
    out = {"best_value": None, "best_params": None, "best_trial": None, "best_run_id": None, "counts": counts}
    metrics = {**counts, "wall_s": wall_s}
    if counts["n_trials_complete"]:
        best = study.best_trial
        out.update(best_value=best.value, best_params=best.params, best_trial=best.number,
                   best_run_id=best.user_attrs.get(RUN_ID_ATTR))
        metrics["best_value"] = best.value
        client.log_batch(run_id, tags=[RunTag("best_trial_number", str(best.number)),
                                       RunTag("best_trial_run_id", str(out["best_run_id"]))])
        log_params_once(run_id, {f"best.{k}": v for k, v in best.params.items()})
        client.log_dict(run_id, {"study_name": study.study_name, "best_trial": best.number,
                                 "best_value": best.value, "best_params": best.params,
                                 "best_user_attrs": best.user_attrs}, "best_params.json")
    client.log_batch(run_id, metrics=_metrics(metrics))
    log_df(run_id, study.trials_dataframe(), "trials.csv")
    figures, skipped = study_figures(study)
    for path, fig in figures.items():
        # Optuna draws some legends outside the axes: save the whole drawing.
        client.log_figure(run_id, fig, path, save_kwargs={"bbox_inches": "tight"})
        plt.close(fig)
    if skipped:
        client.log_dict(run_id, skipped, "figures/skipped.json")
    return out


# ---------------------------------------------------------------- studies shared by many workers


def trial_logger(parent_run_id: str, config, dataset: Dataset) -> TrialLogger:
    """The :class:`TrialLogger` of a study's trials under ``parent_run_id`` (``tune`` and every tune worker)."""
    return TrialLogger(parent_run_id, config.study_name, {
        "n_folds": config.n_folds, "seed": config.seed, "dataset_digest": dataset.digest})


def study_parent_run(study: optuna.Study, config, dataset: Dataset, info: dict) -> str:
    """The MLflow parent run of a study shared by workers (``tune-workers``); returns its id.

    Reused when the study's user attribute ``mlflow_parent_run_id``
    (:data:`PARENT_ATTR`) names a run that exists (set RUNNING again); else
    created in experiment ``pixel-cnn-tune``, checked against the artifact
    store, given the tune inputs, and its id stored in the study. Run this once
    per study (one launcher, or an init Job): two concurrent first launches
    would each create a parent.
    """
    from pixel_cnn.search.tuning import config_dict
    from pixel_cnn.tracking import stores

    client = MlflowClient()
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent:
        try:
            client.update_run(parent, status="RUNNING")
        except Exception:  # noqa: BLE001 - deleted or from another tracking server: make a new one
            parent = None
    if not parent:
        exp = client.get_experiment_by_name(EXPERIMENT_TUNE)
        exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT_TUNE)
        from pixel_cnn.search.tuning import tune_run_name

        run = client.create_run(exp_id, run_name=tune_run_name(config),
                                tags={"pixel_cnn.distributed": "true"})
        parent = run.info.run_id
        stores.check_artifacts(parent)
        log_tune_inputs(parent, config_dict(config), dataset, info)
        study.set_user_attr(PARENT_ATTR, parent)
    return parent


def close_failed_trial_runs(study: optuna.Study) -> list[str]:
    """Mark FAILED the MLflow runs of FAIL trials still RUNNING (their worker died); returns their ids."""
    client, closed = MlflowClient(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = t.user_attrs.get(RUN_ID_ATTR)
        if run_id and client.get_run(run_id).info.status == "RUNNING":
            client.log_batch(run_id, tags=[RunTag("state", "FAIL"),
                                           RunTag("error", "worker stopped beating (killed); trial retried")])
            client.set_terminated(run_id, "FAILED")
            closed.append(run_id)
    return closed
