"""Hyper-parameter search with Optuna over the honest grouped cv.

The objective of a trial is the cv score of :func:`pixel_cnn.evaluation.cv.run_cv`
(same folds, same protocol as the ``cv`` entry point): the mean PR-AUC
(average precision) over folds, maximized. After each fold the running mean
is reported to Optuna (``trial.report``) and a pruner may stop the trial.

No MLflow here: tracking hooks in through a :class:`TuneHooks` object (see
:mod:`pixel_cnn.tracking.tune`), as cv does with ``CVCallbacks``. The dataset
is read once per study by the caller and handed to every worker; nothing is
reloaded per trial.

Optuna references: ``TPESampler`` (Bergstra et al. 2011, "Algorithms for
Hyper-Parameter Optimization"), ``MedianPruner`` and ``SuccessiveHalvingPruner``
(Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning"),
``RDBStorage`` heartbeat + ``RetryHeartbeatStaleTrialCallback`` for crashed trials;
see https://optuna.readthedocs.io/.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import multiprocessing
import os
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pixel_cnn.branches.pixel import PixelBranch
from pixel_cnn.branches.vetters import get_vetter
from pixel_cnn.evaluation.cv import CVCallbacks, FoldOutcome, run_cv
from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.vetter.networks import DEFAULT_PRESET, Preset
from pixel_cnn.vetter.representation import build_inputs

#: Default storage: an sqlite file in the working directory (the project root
#: under ``mlflow run .`` and ``make``); git-ignored.
DEFAULT_STORAGE_FILE = "optuna.db"
PRUNERS = ("median", "halving", "none")
#: Seconds an sqlite connection waits for a lock before failing (sqlite3 ``timeout``).
SQLITE_BUSY_TIMEOUT_S = 600
#: RDBStorage heartbeat: a RUNNING trial whose process stopped beating for
#: ``HEARTBEAT_GRACE_S`` is marked FAIL and re-queued with the same params.
HEARTBEAT_INTERVAL_S, HEARTBEAT_GRACE_S = 20, 120
#: Study attributes that must match when a study is resumed: otherwise its
#: objective values would not be comparable.
STUDY_KEYS = ("objective", "dataset_digest", "preset", "n_folds", "seed")
OBJECTIVE = "pr_auc_mean"


class TuneError(ValueError):
    """A study that cannot run with these settings; the message says why."""


# ---------------------------------------------------------------- search space


def suggest_params(trial: optuna.Trial, max_epochs: int = 40) -> dict:
    """The search space, in one place: sample one configuration.

    Keys are overrides of :func:`pixel_cnn.vetter.networks.get_preset`:

    ========================  ==============================  =====================
    key                       distribution                    unit
    ========================  ==============================  =====================
    ``dropout``               uniform [0.0, 0.6]              probability
    ``lr``                    log-uniform [1e-4, 3e-3]        AdamW learning rate
    ``weight_decay``          log-uniform [1e-6, 1e-2]        AdamW decoupled decay
    ``base_channels``         categorical {8, 16, 32}         conv widths (b, 2b, 4b)
    ``batch_size``            categorical {16, 32, 64}        targets per step
    ``epochs``                int [max(1, max_epochs // 4),   full passes
                              max_epochs]
    ========================  ==============================  =====================

    The seed preset (dropout 0.3, lr 3e-4, weight decay 5e-4, base 16, batch
    32, 40 epochs) lies inside the space for ``max_epochs >= 40``.

    Raises
    ------
    TuneError
        ``max_epochs < 1``.
    """
    if max_epochs < 1:
        raise TuneError(f"max_epochs={max_epochs}; need at least 1")
    return {
        "dropout": trial.suggest_float("dropout", 0.0, 0.6),
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "base_channels": trial.suggest_categorical("base_channels", [8, 16, 32]),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
        "epochs": trial.suggest_int("epochs", max(1, max_epochs // 4), max_epochs),
    }


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TuneConfig:
    """What a tune invocation does besides the data.

    Attributes
    ----------
    preset : str
        Preset whose non-searched fields (representation, image size, ...) the trials keep;
        default the project's default preset (:data:`pixel_cnn.vetter.networks.DEFAULT_PRESET`),
        the same for ``tune`` and ``tune-workers``.
    n_folds, seed : int
        cv protocol, as in ``cv``; ``seed`` also seeds the sampler.
    n_trials : int
        Trials this invocation adds to the study (split over the workers).
    timeout : float or None
        Seconds after which each worker starts no new trial.
    storage : str
        SQLAlchemy URL of the Optuna storage; ``""`` = ``sqlite:///<cwd>/optuna.db``.
        Resolved once, when the config is made (:func:`resolve_storage`): every
        worker and log line then sees the same URL.
    study_name : str
    n_workers : int
        Processes running trials at once against the storage.
    pruner : str
        One of :data:`PRUNERS`.
    max_epochs : int
        Upper bound of the ``epochs`` search range.
    """

    preset: str = DEFAULT_PRESET
    n_folds: int = 5
    seed: int = 42
    n_trials: int = 20
    timeout: float | None = None
    storage: str = ""
    study_name: str = "pixel-cnn"
    n_workers: int = 1
    pruner: str = "median"
    max_epochs: int = 40

    def __post_init__(self) -> None:
        object.__setattr__(self, "storage", resolve_storage(self.storage))

    def check(self) -> None:
        """Raise :class:`TuneError` naming the first bad field."""
        if self.n_trials < 1:
            raise TuneError(f"n_trials={self.n_trials}; need at least 1")
        if self.n_workers < 1:
            raise TuneError(f"n_workers={self.n_workers}; need at least 1")
        if self.n_folds < 2:
            raise TuneError(f"n_folds={self.n_folds}; need at least 2")
        if self.timeout is not None and self.timeout <= 0:
            raise TuneError(f"timeout={self.timeout}; give seconds > 0 (or none)")
        if self.pruner not in PRUNERS:
            raise TuneError(f"unknown pruner {self.pruner!r}; known: {list(PRUNERS)}")
        if self.max_epochs < 1:
            raise TuneError(f"max_epochs={self.max_epochs}; need at least 1")
        if not self.study_name.strip():
            raise TuneError("study_name is empty")
        spec = get_vetter(self.preset)  # ValueError listing the known presets
        if spec.branch_names != ("pixel",):
            raise TuneError(f"preset {self.preset!r} has branches {list(spec.branch_names)}; tuning searches a "
                            "pixel network: tune a pixel-only preset (phase2 is fusion's pixel branch)")


# ---------------------------------------------------------------- storage


def resolve_storage(url: str) -> str:
    """The storage URL to use: ``url``, or the project's sqlite file when empty.

    Any SQLAlchemy URL is accepted (``sqlite:///path.db``,
    ``postgresql://user:pass@host/db``, ...).

    Raises
    ------
    TuneError
        ``url`` is not an SQLAlchemy URL.
    """
    if not url.strip():
        return f"sqlite:///{(Path.cwd() / DEFAULT_STORAGE_FILE).resolve()}"
    try:
        make_url(url)
    except ArgumentError as exc:
        raise TuneError(f"storage {url!r} is not an SQLAlchemy URL ({exc}); "
                        "e.g. sqlite:///optuna.db or postgresql://user:password@host/db") from None
    return url


def redact(url: str) -> str:
    """``url`` with its password masked, for logs and MLflow tags."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


@contextlib.contextmanager
def _init_lock(url: str):
    """Serialize table creation of one sqlite file across processes (flock)."""
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    key = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"pixel-cnn-optuna-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def heartbeat_settings() -> tuple[int, int]:
    """``(interval, grace)`` in seconds of the RDBStorage heartbeat.

    ``PIXEL_CNN_OPTUNA_HEARTBEAT_S`` / ``PIXEL_CNN_OPTUNA_GRACE_S`` when set (read
    at each call, so worker processes started with them inherit them), else
    :data:`HEARTBEAT_INTERVAL_S` / :data:`HEARTBEAT_GRACE_S`.
    """
    interval = int(os.environ.get("PIXEL_CNN_OPTUNA_HEARTBEAT_S", HEARTBEAT_INTERVAL_S))
    grace = int(os.environ.get("PIXEL_CNN_OPTUNA_GRACE_S", HEARTBEAT_GRACE_S))
    if interval < 1 or grace <= interval:
        raise TuneError(f"heartbeat interval {interval} s / grace {grace} s: need 1 <= interval < grace")
    return interval, grace


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna ``RDBStorage`` for ``url`` that several processes can share.

    sqlite: the parent folder is created; connections wait up to
    :data:`SQLITE_BUSY_TIMEOUT_S` s for a lock instead of failing with
    "database is locked"; table creation is serialized across processes.
    Every backend: a heartbeat, so a trial left RUNNING by a killed process is
    marked FAIL and retried once with the same parameters by the next worker
    (``RetryHeartbeatStaleTrialCallback``): no trial is lost on resume.

    Raises
    ------
    TuneError
        Bad URL, or the database cannot be reached (message names the URL, password hidden).
    """
    heartbeat_interval, grace_period = heartbeat_settings()
    engine_kwargs = {}
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    with _init_lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except ImportError as exc:
            raise TuneError(f"storage {redact(url)}: driver missing ({exc})") from None
        except Exception as exc:  # sqlalchemy OperationalError etc.: name the storage
            raise TuneError(f"storage {redact(url)} cannot be opened: {exc}") from exc


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Pruner by name (steps are folds, values the running mean PR-AUC).

    ``median``: ``MedianPruner(n_startup_trials=5, n_warmup_steps=1)``, a
    trial is stopped after its second or a later fold when its running mean is
    below the median of earlier trials at the same fold (the folds are the same
    in every trial, so the comparison is like for like). One fold (~1/5 of 97
    targets) is too noisy to judge on: pruning from the first fold cut a
    20-trial study's wall time by 64% but its best value fell from 0.559 to
    0.488 (one noisy run of ``bench/tune_bench.py``, see docs/tune.md). ``halving``:
    ``SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)``.
    ``none``: ``NopPruner``.

    Raises
    ------
    TuneError
        Unknown name.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(f"unknown pruner {name!r}; known: {list(PRUNERS)}")


def trial_seed(seed: int, trial_number: int) -> int:
    """Seed of the sampler for one trial: numpy ``SeedSequence([seed, trial_number])``."""
    return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Optuna's ``TPESampler``, seeded afresh for each trial from ``(seed, trial number)``.

    TPE keeps no state between trials besides its random generator (it reads
    the history from the storage), so a fresh ``TPESampler(seed=trial_seed(seed,
    n))`` per trial samples exactly as TPE does while making the draws a
    function of the trial number, which the storage hands out uniquely. Hence:
    the same seed on an empty storage gives the same trials; a resumed study
    continues where it stopped (3 trials + 2 resumed = the same 5 trials as one
    run of 5, when run one at a time); parallel workers and concurrent
    invocations never replay each other's random draws.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._samplers: dict[int, optuna.samplers.TPESampler] = {}

    def _for(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.TPESampler:
        if trial.number not in self._samplers:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._samplers[trial.number] = optuna.samplers.TPESampler(
                    seed=trial_seed(self.seed, trial.number), constant_liar=True)
        return self._samplers[trial.number]

    def before_trial(self, study, trial):
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._for(trial).after_trial(study, trial, state, values)
        self._samplers.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to do: each trial's generator is seeded from its number."""


# ---------------------------------------------------------------- objective


class TuneHooks:
    """Tracking hooks of a study; the default does nothing.

    ``trial_start``/``fold_end``/``trial_error`` run inside the objective;
    ``__call__`` is an Optuna study callback, run after each finished
    (complete or pruned) trial. Must be picklable (sent to worker processes).
    """

    def trial_start(self, trial: optuna.Trial, params: dict, preset: Preset, worker: int) -> None: ...
    def fold_end(self, trial: optuna.Trial, step: int, metrics: dict, running_mean: float) -> None: ...
    def trial_error(self, trial: optuna.Trial, exc: BaseException) -> None: ...
    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...


class _PruningCallbacks(CVCallbacks):
    """Reports the running mean PR-AUC after each fold and prunes when told to."""

    def __init__(self, trial: optuna.Trial, hooks: TuneHooks):
        self.trial, self.hooks, self.scores = trial, hooks, []

    def fold_end(self, repeat: int, fold: int, outcome: FoldOutcome) -> None:
        self.scores.append(outcome.metrics["pr_auc"])
        step, running = len(self.scores) - 1, float(np.mean(self.scores))
        self.hooks.fold_end(self.trial, step, outcome.metrics, running)
        self.trial.report(running, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"running mean PR-AUC {running:.4f} after fold {step}")


class Objective:
    """``objective(trial) -> mean fold PR-AUC`` of one cv with the trial's params.

    Holds the dataset and its model inputs (built once per study). The trial's
    user attributes get the cv summary (``pr_auc_oof``, ``roc_auc_mean``, ...).
    """

    def __init__(self, dataset: Dataset, inputs: np.ndarray, config: TuneConfig,
                 hooks: TuneHooks | None = None, worker: int = 0):
        self.dataset, self.inputs, self.config = dataset, inputs, config
        self.hooks, self.worker = hooks or TuneHooks(), worker

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest_params(trial, self.config.max_epochs)
        preset = get_vetter(self.config.preset).pixel_preset(**params)
        self.hooks.trial_start(trial, params, preset, self.worker)
        try:
            # The objective (fold-mean PR-AUC) needs no threshold: no inner split (inner_folds=0).
            result = run_cv(self.dataset, [PixelBranch(preset, inputs=self.inputs)], n_folds=self.config.n_folds,
                            seed=self.config.seed, callbacks=_PruningCallbacks(trial, self.hooks), inner_folds=0,
                            vetter=self.config.preset)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            self.hooks.trial_error(trial, exc)
            raise
        for key in ("pr_auc_oof", "roc_auc_mean", "roc_auc_oof", "pr_auc_std"):
            trial.set_user_attr(key, float(result.summary[key]))
        return float(result.summary[OBJECTIVE])


# ---------------------------------------------------------------- study


def study_attrs(dataset: Dataset, config: TuneConfig) -> dict:
    """What a study's objective values depend on besides the searched params."""
    return {"objective": OBJECTIVE, "dataset_digest": dataset.digest, "preset": config.preset,
            "n_folds": config.n_folds, "seed": config.seed}


def open_study(config: TuneConfig, dataset: Dataset) -> optuna.Study:
    """Create the study, or load it to resume; checks it measures the same thing.

    Raises
    ------
    TuneError
        The stored study was made on other data or with another protocol
        (dataset digest, preset, n_folds, seed, direction); the message names
        the field and both values.
    """
    storage = open_storage(config.storage)
    study = optuna.create_study(storage=storage, study_name=config.study_name, direction="maximize",
                                load_if_exists=True, pruner=make_pruner(config.pruner))
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"study {config.study_name!r} in {redact(config.storage)} "
                        "minimizes; this objective is maximized: use another study_name")
    wanted, have = study_attrs(dataset, config), study.user_attrs
    for key in STUDY_KEYS:
        if key in have and have[key] != wanted[key]:
            raise TuneError(
                f"study {config.study_name!r} was run with {key}={have[key]!r}, this run has "
                f"{key}={wanted[key]!r}: its values are not comparable; use another study_name"
            )
    for key in STUDY_KEYS:
        if key not in have:
            study.set_user_attr(key, wanted[key])
    return study


#: Trial states that count as finished towards a target (``optimize(target=...)``).
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def n_finished(study: optuna.Study) -> int:
    """Trials of ``study`` that are COMPLETE or PRUNED."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def study_inputs(config: TuneConfig, dataset: Dataset) -> np.ndarray:
    """The model inputs of ``dataset`` for ``config.preset``, built once per study (float32 ``(N, C, S, S)``)."""
    preset = get_vetter(config.preset).pixel_preset()
    return build_inputs(dataset.stack_list(), preset.representation, preset.image_size)


def optimize(config: TuneConfig, dataset: Dataset, inputs: np.ndarray, hooks: TuneHooks | None = None,
             worker: int = 0, n_trials: int | None = None, target: int | None = None) -> int:
    """The one tuning worker: load the study and run trials; returns how many trials it started.

    ``tune`` runs it in each of its worker processes (``n_trials`` each);
    ``tune-workers`` runs it in every worker, on any machine, with ``target``:
    stop once the study holds ``target`` finished trials (``MaxTrialsCallback``),
    so a killed worker's share is taken over by the others. Trials are seeded
    by number (:class:`TrialSeededSampler`) and pruned by ``config.pruner``.

    Raises
    ------
    TuneError
        The study does not exist in the storage, or the storage cannot be opened.
    """
    hooks = hooks or TuneHooks()
    try:
        study = optuna.load_study(study_name=config.study_name, storage=open_storage(config.storage),
                                  sampler=TrialSeededSampler(config.seed), pruner=make_pruner(config.pruner))
    except KeyError:
        raise TuneError(f"study {config.study_name!r} not found in {redact(config.storage)}") from None
    before = len(study.get_trials(deepcopy=False))
    callbacks = [hooks]
    if target is not None:
        if n_finished(study) >= target:
            return 0
        callbacks.append(optuna.study.MaxTrialsCallback(target, states=FINISHED_STATES))
    study.optimize(Objective(dataset, inputs, config, hooks, worker), n_trials=n_trials,
                   timeout=config.timeout, callbacks=callbacks, catch=())
    return len(study.get_trials(deepcopy=False)) - before


def split_trials(n_trials: int, n_workers: int) -> list[int]:
    """Trials per worker, summing to ``n_trials`` (earlier workers take the remainder)."""
    return [n_trials // n_workers + (1 if w < n_trials % n_workers else 0) for w in range(n_workers)]


def run_study(config: TuneConfig, dataset: Dataset, hooks: TuneHooks | None = None) -> tuple[optuna.Study, int]:
    """Run ``config.n_trials`` more trials of the study on ``dataset``.

    Worker 0 runs in this process; workers 1.. in spawned processes, all on
    the same storage (trials seeded by number, see :class:`TrialSeededSampler`). The
    model inputs are built once here and sent to the workers.

    Returns
    -------
    (study, n_existing)
        The study reloaded after all workers finished, and its number of trials
        before this invocation (trials with ``number >= n_existing`` are new,
        unless another invocation ran at the same time).

    Raises
    ------
    TuneError
        Bad configuration or storage, or a study made with another protocol.
    """
    config.check()
    hooks = hooks or TuneHooks()
    study = open_study(config, dataset)
    n_existing = len(study.get_trials(deepcopy=False))
    inputs = study_inputs(config, dataset)
    shares = [n for n in split_trials(config.n_trials, config.n_workers) if n > 0]
    args = (config, dataset, inputs, hooks)
    if len(shares) == 1:
        optimize(*args, 0, shares[0])
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(shares) - 1, mp_context=ctx) as pool:
            futures = [pool.submit(optimize, *args, w, n) for w, n in enumerate(shares) if w > 0]
            optimize(*args, 0, shares[0])
            for future in futures:
                future.result()
    study = optuna.load_study(study_name=config.study_name, storage=open_storage(config.storage))
    return study, n_existing


def config_dict(config: TuneConfig) -> dict:
    """The configuration as plain values, storage password hidden."""
    d = asdict(config)
    d["storage"] = redact(config.storage)
    return d


def tune_run_name(config: TuneConfig) -> str:
    """What a tune parent run is, as its name: ``tune phase2 study=pixel-cnn seed=42 x5 n=20``."""
    return (f"tune {config.preset} study={config.study_name} seed={config.seed} x{config.n_folds} "
            f"n={config.n_trials}")


def tune_description(summary: dict, registered: dict | None = None) -> str:
    """The headline figures of a study, as the parent run's description (Markdown).

    ``summary``: :func:`pixel_cnn.tracking.tune.log_study_summary`'s return
    (``best_value``, ``best_params``, ``best_trial``, ``counts``); ``registered``: ``jobs.tune``'s
    ``registered`` entry (re-cross-validated best params), when there is one.
    """
    c = summary["counts"]
    lines = [f"Study trials: {c['n_trials']} ({c['n_trials_complete']} complete, {c['n_trials_pruned']} pruned, "
             f"{c['n_trials_fail']} failed); this run {c['run_trials']}.", ""]
    if summary.get("best_value") is None:
        lines.append("No trial completed.")
    else:
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted(summary["best_params"].items()))
        lines.append(f"- best trial {summary['best_trial']}: mean fold PR-AUC (average precision) "
                     f"**{summary['best_value']:.3f}** with {params}")
    if registered:
        lines.append(f"- best params cross-validated again (run {registered['run_id']}): pooled OOF PR-AUC "
                     f"**{registered['pr_auc_oof']:.3f}**, registered as version {registered['version']} @challenger")
    return "\n".join(lines) + "\n"
