"""Runs: the run of each job, parameters logged once, artifacts, the prepared dataset as input.

Parameters are logged once: a key already on a run (``mlflow run`` logs the
entry point's parameters as given on the command line) is never logged again
in another string form. The configuration actually used is logged under
``model.*`` keys (``model.lr``, ``model.dropout``, ...) and saved inside every
model artifact.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.vetter.networks import Preset
from pixel_cnn.io.dataset import read_dataset
from pixel_cnn.tracking import stores

EXPERIMENT_CV = "pixel-cnn-cv"
EXPERIMENT_PREP = "pixel-cnn-prep"
EXPERIMENT_BENCH = "pixel-cnn-bench"
EXPERIMENT_TUNE = "pixel-cnn-tune"
#: The value of the ``mlflow.experimentKind`` experiment tag that makes ``mlflow ui`` (3.x) open an
#: experiment on its runs ("Machine learning") instead of the GenAI overview (traces, assistant).
#: From MLflow's UI source (``ExperimentKind.CUSTOM_MODEL_DEVELOPMENT`` in ``mlflow/server/js``).
EXPERIMENT_KIND = "custom_model_development"


def now_ms() -> int:
    """Wall-clock time in milliseconds, MLflow's metric timestamp."""
    return int(time.time() * 1000)


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


def mark_training_experiment(experiment_id: str) -> None:
    """Tag experiment ``experiment_id`` ``mlflow.experimentKind`` = :data:`EXPERIMENT_KIND` (a
    model-training experiment: ``mlflow ui`` opens it on its runs table). Idempotent."""
    client = MlflowClient()
    if client.get_experiment(experiment_id).tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)


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


def log_figure(run_id: str, fig: plt.Figure, path: str) -> None:
    """Log ``fig`` as the artifact ``path`` of ``run_id`` and close it."""
    MlflowClient().log_figure(run_id, fig, path)
    plt.close(fig)


def log_df(run_id: str, df: pd.DataFrame, path: str) -> None:
    """Log ``df`` as the CSV artifact ``path`` (``dir/name.csv`` or ``name.csv``) of ``run_id``."""
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


def open_dataset(dataset: str) -> tuple[Dataset, dict]:
    """Open a prepared dataset, given as a prep output folder or an artifact URI.

    ``dataset`` is a folder written by ``prep`` (``data/processed``) or an
    artifact URI such as ``runs:/<prep_run_id>/dataset`` (downloaded once with
    :func:`pixel_cnn.tracking.stores.local_dataset`). Every job opens its data
    through here. Returns ``(dataset, info)`` as
    :func:`pixel_cnn.io.dataset.read_dataset`.

    Raises
    ------
    DataError
        Not a prep output (the message names the folder).
    StoreError
        The URI cannot be downloaded.
    """
    return read_dataset(stores.local_dataset(dataset))


def is_generated_name(name: str | None) -> bool:
    """Whether ``name`` is one MLflow made up (``redolent-pug-696``), not one a user chose.

    MLflow names an unnamed run ``<predicate>-<noun>-<integer>`` from its own word lists
    (``mlflow.utils.name_utils._generate_random_name``, cut to 20 characters when longer);
    ``mlflow run`` creates its run that way and only then sets ``--run-name`` when given.
    """
    from mlflow.utils import name_utils

    if not name:
        return True
    parts = name.split("-")
    if len(parts) == 3 and parts[0] in name_utils._GENERATOR_PREDICATES and parts[1] in name_utils._GENERATOR_NOUNS:
        return parts[2].isdigit() or parts[2] == ""
    if len(name) == 20 and len(parts) >= 2 and parts[0] in name_utils._GENERATOR_PREDICATES:
        return any(noun.startswith(parts[1]) for noun in name_utils._GENERATOR_NOUNS)  # truncated
    return False


def describe_run(run_id: str, text: str) -> None:
    """Set the run's description (the Markdown ``mlflow.note.content`` tag shown by ``mlflow ui``)."""
    MlflowClient().set_tag(run_id, MLFLOW_RUN_NOTE, text)


class job_run:
    """Context manager: the run of one entry point invocation; yields its run id.

    Under ``mlflow run`` it resumes the run that ``mlflow run`` created
    (``MLFLOW_RUN_ID``) and names it ``run_name`` unless the user named it
    (``mlflow run --run-name``: a name MLflow did not generate, :func:`is_generated_name`,
    is kept); otherwise it starts one named ``run_name`` in ``experiment``. Inside
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
            # Fail before any work when the server or the artifact store is unusable (stores.StoreError);
            # a fresh sqlite store is created once, under a lock (concurrent jobs on a new machine).
            stores.check_tracking()
            stores.init_store()
            set_experiment(self.experiment)
            self.run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") else self.run_name)
        try:
            if self.run_name and is_generated_name(self.run.info.run_name):
                MlflowClient().set_tag(self.run.info.run_id, MLFLOW_RUN_NAME, self.run_name)
            log_params_once(self.run.info.run_id, self.cli_params)
            if parent is None:
                mark_training_experiment(self.run.info.experiment_id)
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
