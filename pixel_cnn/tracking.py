"""Every MLflow call of the project lives here.

Parameters are logged once: a key already on a run (``mlflow run`` logs the
entry point's parameters as given on the command line) is never logged again
in another string form. The configuration actually used is logged under
``model.*`` keys (``model.lr``, ``model.dropout``, ...) and saved inside every
model artifact.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import pixel_cnn
from pixel_cnn import ensemble as ens
from pixel_cnn import stores
from pixel_cnn.cv import CVCallbacks, CVResult, FoldOutcome
from pixel_cnn.data import Dataset
from pixel_cnn import explain
from pixel_cnn.metrics import pr_roc_figure, reliability_figure
from pixel_cnn.models import Preset

MODEL_NAME = "pixel-cnn"
EXPERIMENT_CV = "pixel-cnn-cv"
EXPERIMENT_PREP = "pixel-cnn-prep"
EXPERIMENT_BENCH = "pixel-cnn-bench"
#: Input of the served model: any number of stacks of 32 phase bins, any H x W.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 32, -1, -1))]),
    outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold")]),
)
_MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call


def pip_requirements() -> list[str]:
    """Exact versions of what the served model imports (no inference: it costs ~6 s)."""
    import cloudpickle
    import torch

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def _package_dir() -> str:
    return str(Path(pixel_cnn.__file__).resolve().parent)


def set_experiment(name: str) -> str:
    """Use experiment ``name`` unless the run or experiment was chosen outside; returns its id.

    ``mlflow run`` chooses both (``MLFLOW_RUN_ID``); a user may choose the experiment with
    ``MLFLOW_EXPERIMENT_NAME``. ``mlflow.set_experiment`` also exports ``MLFLOW_EXPERIMENT_ID``;
    it is removed again, so that a second job in the same process (perhaps on another store)
    does not inherit this one's id ("No Experiment with id=1 exists").
    """
    if os.environ.get("MLFLOW_RUN_ID") or os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        return ""
    experiment_id = mlflow.set_experiment(name).experiment_id
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    return experiment_id


def log_params_once(run_id: str, params: dict) -> None:
    """Log the ``params`` (as strings) that are not yet on the run."""
    client = MlflowClient()
    have = client.get_run(run_id).data.params
    new = [Param(k, str(v)) for k, v in params.items() if k not in have]
    if new:
        client.log_batch(run_id, params=new)


def model_params(preset: Preset) -> dict[str, str]:
    """The resolved preset as ``model.<field>`` parameters."""
    return {f"model.{k}": str(v) for k, v in preset.to_dict().items()}


def _log_figure(run_id: str, fig: plt.Figure, path: str) -> None:
    MlflowClient().log_figure(run_id, fig, path)
    plt.close(fig)


def _log_df(run_id: str, df: pd.DataFrame, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        df.to_csv(local, index=False)
        MlflowClient().log_artifact(run_id, str(local), str(Path(path).parent) if "/" in path else None)


def log_dataset_input(run_id: str, dataset: Dataset, source: str, name: str, context: str) -> None:
    """``mlflow.log_input`` of the manifest, with the stack-level digest as the dataset digest."""
    with warnings.catch_warnings(), mlflow.start_run(run_id=run_id, nested=bool(mlflow.active_run())):
        # kepid/label are whole numbers by construction; the path source is a local folder.
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
        ds = mlflow.data.from_pandas(dataset.manifest, source=source or "unknown", targets="label",
                                     name=name, digest=dataset.digest)
        mlflow.log_input(ds, context=context)


# ---------------------------------------------------------------- prep


def log_prep(run_id: str, dataset: Dataset, out_dir: Path, data_dir: Path, labels: str) -> None:
    """Log a prep run: dataset input with digest, counts, the skipped list and the files."""
    client = MlflowClient()
    counts = dataset.counts()
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, _now(), 0) for k, v in counts.items()],
        tags=[RunTag("dataset_digest", dataset.digest), RunTag("labels", labels)],
    )
    log_dataset_input(run_id, dataset, str(data_dir / "stacks"), f"kepler-pixdiff-{labels}", "prep")
    client.log_artifacts(run_id, str(out_dir), "dataset")


def _now() -> int:
    import time

    return int(time.time() * 1000)


# ---------------------------------------------------------------- cv


class MlflowCVCallbacks(CVCallbacks):
    """Logs each fold as a nested child run of ``parent_run_id``, by explicit run id.

    Per child: params (``repeat``, ``fold``, ``model.*``, fold sizes), per-epoch
    ``train_loss``/``val_loss`` (step = epoch), final metrics, PR/ROC figure,
    the validation predictions, the fold model (an ``mlflow.pyfunc`` that
    takes raw stacks, like the ensemble) and, with ``explain``, the attribution
    figure ``figures/attributions.png`` (:func:`log_attributions`).
    """

    def __init__(self, parent_run_id: str, preset: Preset, log_models: bool = True,
                 input_example: np.ndarray | None = None, explain: bool = True):
        self.input_example = input_example
        self.explain = explain
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
        params = {"repeat": repeat, "fold": fold, **model_params(self.preset), **info}
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self._epochs = []

    def epoch_end(self, repeat, fold, epoch, losses):
        ts = _now()
        self._epochs += [Metric(k, float(v), ts, epoch) for k, v in losses.items()]

    def fold_end(self, repeat, fold, outcome: FoldOutcome):
        run_id = self.child_ids[(repeat, fold)]
        final = [Metric(k, v, _now(), 0) for k, v in outcome.metrics.items()]
        metrics = self._epochs + final
        for i in range(0, len(metrics), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i:i + _MAX_BATCH])
        name = f"repeat{repeat}-fold{fold}"
        _log_figure(run_id, pr_roc_figure([(name, outcome.val_labels, outcome.result.val_prob)], name),
                    "figures/pr_roc.png")
        _log_df(run_id, pd.DataFrame({"kepid": outcome.val_kepids, "label": outcome.val_labels,
                                      "probability": outcome.result.val_prob}), "val_predictions.csv")
        self.client.log_metric(run_id, "threshold", outcome.threshold)
        if self.explain and outcome.val_inputs is not None:
            log_attributions(run_id, self.preset, outcome, name)
        if self.log_models:
            log_pyfunc(run_id, self.preset, [outcome.result.state_dict], 0.5,
                       {"member_of": self.parent.info.run_id, "repeat": repeat, "fold": fold},
                       input_example=self.input_example)
        self.client.set_terminated(run_id)


def log_attributions(run_id: str, preset: Preset, outcome: FoldOutcome, name: str) -> None:
    """Log ``figures/attributions.png``: each validation target's in-transit input beside its
    Integrated-Gradients map (:mod:`pixel_cnn.explain`), on run ``run_id``."""
    attr = explain.integrated_gradients(preset, outcome.result.state_dict, outcome.val_inputs)
    fig = explain.attribution_figure(
        outcome.val_inputs, attr, outcome.val_kepids, outcome.val_labels, outcome.result.val_prob,
        n_maps=preset.in_channels - preset.n_scalars,
        title=f"{name}: input channel 0 | Integrated Gradients (red: toward CONFIRMED)")
    _log_figure(run_id, fig, "figures/attributions.png")


def log_pyfunc(run_id: str, preset: Preset, state_dicts: list[dict], threshold: float, info: dict,
               registered_model_name: str | None = None, input_example: np.ndarray | None = None):
    """Log an :class:`~pixel_cnn.ensemble.PixelCNNPyfunc` as ``model`` of ``run_id``.

    Returns the ``ModelInfo``. Registers it as ``registered_model_name`` when given.
    """
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # predict() takes stacks of any size on purpose: no type-hint validation wanted.
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        artifacts = ens.save_members(Path(tmp), preset, state_dicts, threshold, info)
        with mlflow.start_run(run_id=run_id, nested=bool(mlflow.active_run())):
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(_package_dir()) / "serving_model.py"),
                artifacts=artifacts,
                code_paths=[_package_dir()],
                pip_requirements=pip_requirements(),
                signature=SIGNATURE,
                input_example=input_example,
                registered_model_name=registered_model_name,
            )


def log_cv_summary(run_id: str, result: CVResult) -> None:
    """Parent-run metrics (``_mean``, ``_std``, ``_oof``, ``threshold``), OOF table and figures."""
    client = MlflowClient()
    ts = _now()
    rates = {f"val_positive_rate_r{f.repeat}_f{f.fold}": f.positive_rate for f in result.folds}
    client.log_batch(run_id, metrics=[Metric(k, v, ts, 0) for k, v in {**result.summary, **rates}.items()])
    _log_df(run_id, result.oof, "oof_predictions.csv")
    folds = pd.DataFrame([(k, f.repeat, f.fold) for f in result.folds for k in f.val_kepids],
                         columns=["kepid", "repeat", "fold"])
    _log_df(run_id, folds.sort_values(["repeat", "kepid"]), "fold_assignment.csv")
    first = result.oof[result.oof["repeat"] == 0]
    curves = [(f"fold {k}", g["label"].to_numpy(), g["probability"].to_numpy()) for k, g in first.groupby("fold")]
    curves.insert(0, ("pooled OOF", first["label"].to_numpy(), first["probability"].to_numpy()))
    _log_figure(run_id, pr_roc_figure(curves, f"{result.preset.name}: out-of-fold, repeat 0"),
                "figures/pr_roc_folds.png")
    oof = result.oof
    _log_figure(run_id, reliability_figure(
        [(f"pooled OOF, {oof['repeat'].nunique()} repeat(s)", oof["label"].to_numpy(), oof["probability"].to_numpy())],
        title=f"{result.preset.name}: reliability, out-of-fold"), "figures/reliability.png")
    client.log_dict(run_id, result.preset.to_dict(), "config.json")


def log_cv_inputs(run_id: str, dataset: Dataset, info: dict, preset: Preset) -> None:
    """Record what cv trained on: the dataset (digest) and the prep run behind it."""
    client = MlflowClient()
    tags = {"dataset_digest": dataset.digest, "preset": preset.name}
    if info.get("prep_run_id"):
        tags["prep_run_id"] = info["prep_run_id"]
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    log_params_once(run_id, model_params(preset))
    log_dataset_input(run_id, dataset, info.get("source", ""), "kepler-pixdiff", "training")


def log_ensemble(run_id: str, result: CVResult, register: bool, alias: str,
                 input_example: np.ndarray | None, dataset_digest: str):
    """Log the fold ensemble (repeat 0) as ``model`` of the parent run; optionally register.

    With ``register`` a new version of ``pixel-cnn`` is created, tagged with
    its OOF scores, and ``alias`` (e.g. ``champion``) set to it. Returns
    ``(model_info, version or None)``.
    """
    members = result.ensemble_folds()
    info = {"cv_run_id": run_id, "dataset_digest": dataset_digest,
            "pr_auc_oof": result.summary["pr_auc_oof"], "roc_auc_oof": result.summary["roc_auc_oof"]}
    model_info = log_pyfunc(run_id, result.preset, [f.result.state_dict for f in members],
                            result.summary["threshold"], info, input_example=input_example)
    version = None
    if register:
        # Register only a model whose files are all in the artifact store (a remote store can
        # fail mid-upload): never a version that points at missing artifacts.
        verify_model_artifacts(model_info)
        client = MlflowClient()
        version = str(mlflow.register_model(model_info.model_uri, MODEL_NAME).version)
        for key in ("pr_auc_oof", "roc_auc_oof", "threshold"):
            client.set_model_version_tag(MODEL_NAME, version, key, f"{result.summary[key]:.4f}")
        client.set_model_version_tag(MODEL_NAME, version, "preset", result.preset.name)
        client.set_model_version_tag(MODEL_NAME, version, "cv_run_id", run_id)
        if alias:
            client.set_registered_model_alias(MODEL_NAME, alias, version)
    return model_info, version


#: Files every logged pixel-cnn pyfunc model holds (relative to the model's root).
MODEL_FILES = ("MLmodel", "serving_model.py", "requirements.txt", f"artifacts/{ens.CONFIG_FILE}", f"artifacts/{ens.WEIGHTS_FILE}")


def verify_model_artifacts(model_info) -> None:
    """Raise :class:`~pixel_cnn.stores.StoreError` unless every file of ``MODEL_FILES`` is stored.

    Lists the logged model's artifacts through the tracking server (or the
    store directly); a missing file means a partial upload.
    """
    client = MlflowClient()
    found = set()
    for sub in ("", "artifacts"):
        found |= {a.path for a in client.list_logged_model_artifacts(model_info.model_id, sub or None)}
    missing = [f for f in MODEL_FILES if f not in found]
    if missing:
        raise stores.StoreError(f"model {model_info.model_uri}: {missing} missing from the artifact store; "
                                "not registered")


def log_bench(run_id: str, bench: dict, table: str) -> None:
    """Log a quality benchmark: ``<preset>.<metric>_mean/_std`` metrics, ``bench/quality.json``
    and ``bench/quality.md`` (the table)."""
    client = MlflowClient()
    ts = _now()
    metrics = []
    for name, entry in bench["presets"].items():
        for metric in ("pr_auc", "roc_auc", "f1", "brier"):
            metrics += [Metric(f"{name}.{metric}_mean", entry[metric]["mean"], ts, 0),
                        Metric(f"{name}.{metric}_std", entry[metric]["std"], ts, 0)]
        metrics += [Metric(f"{name}.pr_auc_ci_low", entry["pr_auc_ci95"][0], ts, 0),
                    Metric(f"{name}.pr_auc_ci_high", entry["pr_auc_ci95"][1], ts, 0)]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag("fold_digest", bench["fold_digest"]),
                                                   RunTag("dataset_digest", bench["dataset_digest"])])
    client.log_dict(run_id, bench, "bench/quality.json")
    client.log_text(run_id, table + "\n", "bench/quality.md")


# ---------------------------------------------------------------- runs


class job_run:
    """Context manager: the run of one entry point invocation; yields its run id.

    Under ``mlflow run`` it resumes the run that ``mlflow run`` created
    (``MLFLOW_RUN_ID``); otherwise it starts one in ``experiment``. Inside
    another job's active run it starts a nested child run of it, in the
    parent's experiment. The run
    ends FINISHED, or FAILED when the body raises.
    """

    def __init__(self, experiment: str, run_name: str, cli_params: dict | None = None):
        self.experiment, self.run_name, self.cli_params = experiment, run_name, cli_params or {}

    def __enter__(self) -> str:
        parent = mlflow.active_run()
        if parent is not None:
            # A job inside another job's run (tune's register_best cv): a nested child run.
            self.run = mlflow.start_run(run_name=self.run_name, nested=True,
                                        experiment_id=parent.info.experiment_id)
        else:
            # Fail before any work when the server or the artifact store is unusable (stores.StoreError).
            stores.check_tracking()
            set_experiment(self.experiment)
            self.run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") else self.run_name)
        try:
            log_params_once(self.run.info.run_id, self.cli_params)
            if parent is None:
                stores.check_artifacts(self.run.info.run_id)
        except BaseException:
            stores.end_run(self.run.info.run_id, "FAILED")
            raise
        return self.run.info.run_id

    def __exit__(self, exc_type, exc, tb):
        # Keeps trying while the tracking server is down (stores.end_run), so the run ends FAILED.
        ok = stores.end_run(self.run.info.run_id, "FAILED" if exc_type else "FINISHED")
        if not ok and exc_type is None:
            raise stores.StoreError(f"run {self.run.info.run_id}: the tracking server {stores.tracking_uri()} "
                                    "did not record the end of the run")
        return False
