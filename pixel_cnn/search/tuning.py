"""Hyper-parameter search with Optuna over the honest grouped cv.

The objective of a trial is the headline score of :func:`pixel_cnn.evaluation.cv.run_cv`
(same folds, same protocol as the ``cv`` entry point): the pooled out-of-fold PR-AUC
(average precision of every target's out-of-fold probability, cv's ``summary["pr_auc_oof"]``),
maximized. After each fold the pooled PR-AUC of the folds done so far is reported to Optuna
(``trial.report``) and a pruner may stop the trial.

No MLflow here: tracking hooks in through a :class:`TuneHooks` object (see
:mod:`pixel_cnn.tracking.tune`), as cv does with ``CVCallbacks``. The dataset
is read once per worker and its model inputs built once; nothing is reloaded per
trial. Where a study is kept (storage URLs, file locks, heartbeat) is
:mod:`pixel_cnn.search.storage`; worker processes are started by
:func:`pixel_cnn.jobs.tune.run_workers`, each running :func:`optimize`.

Optuna references: ``TPESampler`` (Bergstra et al. 2011, "Algorithms for
Hyper-Parameter Optimization"), ``MedianPruner`` and ``SuccessiveHalvingPruner``
(Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning"),
``RDBStorage`` heartbeat + ``RetryHeartbeatStaleTrialCallback`` for crashed trials;
see https://optuna.readthedocs.io/. Average precision: scikit-learn's
``average_precision_score`` (as :func:`pixel_cnn.evaluation.metrics.binary_metrics`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import optuna
from sklearn.metrics import average_precision_score

from pixel_cnn.branches.pixel import PixelBranch
from pixel_cnn.branches.vetters import get_vetter
from pixel_cnn.evaluation.cv import CVCallbacks, FoldOutcome, run_cv
from pixel_cnn.search.storage import fail_stale_trials, open_storage, redact, resolve_storage
from pixel_cnn.stacks.dataset import Dataset
from pixel_cnn.vetter.networks import DEFAULT_PRESET, Preset
from pixel_cnn.vetter.representation import build_inputs

PRUNERS = ("median", "halving", "none")
#: Study attributes that must match when a study is resumed: otherwise its
#: objective values would not be comparable.
STUDY_KEYS = ("objective", "dataset_digest", "preset", "n_folds", "seed")
#: The objective: cv's headline, the pooled out-of-fold PR-AUC (average precision).
OBJECTIVE = "pr_auc_oof"
#: Objectives of earlier versions, named in the message that refuses a study made with one.
OLD_OBJECTIVES = {"pr_auc_mean": "the mean of the fold PR-AUCs"}
#: Trial user attribute naming the group a trial was run for (tracking: the MLflow parent
#: run of the invocation, :data:`pixel_cnn.tracking.tune.PARENT_ATTR`); a worker's
#: ``target`` counts the finished trials of its group.
GROUP_ATTR = "mlflow_parent_run_id"
#: Seconds a worker waits between looks at the study while trials of other workers could
#: complete its target (:func:`optimize`).
POLL_S = 1.0


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
        Finished (COMPLETE or PRUNED) trials this invocation adds to the study, whatever
        worker runs them (:func:`optimize`).
    timeout : float or None
        Seconds after which each worker starts no new trial (None: no limit).
    storage : str
        SQLAlchemy URL of the Optuna storage; ``""`` = ``sqlite:///<cwd>/optuna.db``.
        Resolved once, when the config is made
        (:func:`pixel_cnn.search.storage.resolve_storage`): every worker and log line then
        sees the same URL.
    study_name : str
    n_workers : int
        Worker processes running trials at once against the storage (``tune``; the
        ``tune-workers`` launcher starts as many).
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


# ---------------------------------------------------------------- sampling and pruning


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Pruner by name (steps are folds, values the pooled OOF PR-AUC of the folds done so far).

    ``median``: ``MedianPruner(n_startup_trials=5, n_warmup_steps=1)``, a
    trial is stopped after its second or a later fold when its running pooled value is
    below the median of earlier trials at the same fold (the folds are the same
    in every trial, so the comparison is like for like). One fold (~1/5 of 97
    targets) is too noisy to judge on: pruning from the first fold cut a
    20-trial study's wall time by 64% but its best value fell from 0.559 to
    0.488 (one noisy run of ``bench/tune_bench.py`` with the earlier fold-mean
    objective, see docs/tune.md). ``halving``:
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
    (complete or pruned) trial.
    """

    def trial_start(self, trial: optuna.Trial, params: dict, preset: Preset, worker: int) -> None: ...
    def fold_end(self, trial: optuna.Trial, step: int, metrics: dict, running_pr_auc_oof: float) -> None: ...
    def trial_error(self, trial: optuna.Trial, exc: BaseException) -> None: ...
    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...


class _PruningCallbacks(CVCallbacks):
    """Reports the pooled PR-AUC of the folds done so far after each fold; prunes when told to.

    After fold ``k`` the value is ``average_precision_score`` of the out-of-fold
    probabilities of folds ``0..k`` pooled (labels float 0/1, probabilities in [0, 1]); after
    the last fold it is the trial's objective, cv's ``pr_auc_oof``.
    """

    def __init__(self, trial: optuna.Trial, hooks: TuneHooks):
        self.trial, self.hooks = trial, hooks
        self.labels: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def fold_end(self, repeat: int, fold: int, outcome: FoldOutcome) -> None:
        self.labels.append(np.asarray(outcome.val_labels))
        self.probs.append(np.asarray(outcome.prob))
        step = len(self.labels) - 1
        running = float(average_precision_score(np.concatenate(self.labels), np.concatenate(self.probs)))
        self.hooks.fold_end(self.trial, step, outcome.metrics, running)
        self.trial.report(running, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pooled OOF PR-AUC {running:.4f} after fold {step}")


class Objective:
    """``objective(trial) -> pooled out-of-fold PR-AUC`` of one cv with the trial's params.

    Holds the dataset and its model inputs (built once per worker). The trial's
    user attributes get the cv summary (``pr_auc_oof`` = the value, ``pr_auc_mean``,
    ``pr_auc_std``, ``roc_auc_oof``, ``roc_auc_mean``) and, when ``group`` is given,
    :data:`GROUP_ATTR`.
    """

    def __init__(self, dataset: Dataset, inputs: np.ndarray, config: TuneConfig,
                 hooks: TuneHooks | None = None, worker: int = 0, group: str | None = None):
        self.dataset, self.inputs, self.config = dataset, inputs, config
        self.hooks, self.worker, self.group = hooks or TuneHooks(), worker, group

    def __call__(self, trial: optuna.Trial) -> float:
        if self.group is not None:
            trial.set_user_attr(GROUP_ATTR, self.group)
        params = suggest_params(trial, self.config.max_epochs)
        preset = get_vetter(self.config.preset).pixel_preset(**params)
        self.hooks.trial_start(trial, params, preset, self.worker)
        try:
            # The objective (pooled PR-AUC) needs no threshold: no inner split (inner_folds=0).
            result = run_cv(self.dataset, [PixelBranch(preset, inputs=self.inputs)], n_folds=self.config.n_folds,
                            seed=self.config.seed, callbacks=_PruningCallbacks(trial, self.hooks), inner_folds=0,
                            vetter=self.config.preset)
        except optuna.TrialPruned:
            raise
        except BaseException as exc:
            self.hooks.trial_error(trial, exc)
            raise
        for key in ("pr_auc_oof", "pr_auc_mean", "pr_auc_std", "roc_auc_oof", "roc_auc_mean"):
            trial.set_user_attr(key, float(result.summary[key]))
        return float(result.summary[OBJECTIVE])


# ---------------------------------------------------------------- study


def study_attrs(dataset: Dataset, config: TuneConfig) -> dict:
    """What a study's objective values depend on besides the searched params."""
    return {"objective": OBJECTIVE, "dataset_digest": dataset.digest, "preset": config.preset,
            "n_folds": config.n_folds, "seed": config.seed}


def check_study(study: optuna.Study, wanted: dict, where: str) -> None:
    """Refuse a stored study whose values are not comparable with this run's.

    ``wanted``: :func:`study_attrs`. ``where``: the study's name and storage, for the message.

    Raises
    ------
    TuneError
        The study minimizes; it was made with another objective (an old objective is
        named with what it measured), or on other data / with another protocol (dataset
        digest, preset, n_folds, seed): the message names the field and both values; or it
        holds trials but records no objective (made before studies recorded one).
    """
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"study {where} minimizes; this objective is maximized: use another study_name")
    have = study.user_attrs
    if "objective" not in have and study.get_trials(deepcopy=False):
        raise TuneError(f"study {where} holds trials but records no objective; tuning maximizes "
                        f"{OBJECTIVE} (pooled out-of-fold PR-AUC): use another study_name")
    old = have.get("objective")
    if old is not None and old != wanted["objective"]:
        what = OLD_OBJECTIVES.get(old, "another score")
        raise TuneError(
            f"study {where} was created with objective {old!r} ({what}); tuning now maximizes "
            f"{wanted['objective']!r}, the pooled out-of-fold PR-AUC (average precision) that cv reports: "
            "its values are not comparable; use another study_name (or another storage)")
    for key in STUDY_KEYS:
        if key in have and have[key] != wanted[key]:
            raise TuneError(
                f"study {where} was run with {key}={have[key]!r}, this run has "
                f"{key}={wanted[key]!r}: its values are not comparable; use another study_name"
            )


def open_study(config: TuneConfig, dataset: Dataset) -> optuna.Study:
    """Create the study, or load it to resume; checks it measures the same thing (:func:`check_study`).

    Raises
    ------
    TuneError
        As :func:`check_study`.
    StorageError
        The storage cannot be opened (:func:`pixel_cnn.search.storage.open_storage`).
    """
    storage = open_storage(config.storage)
    study = optuna.create_study(storage=storage, study_name=config.study_name, direction="maximize",
                                load_if_exists=True, pruner=make_pruner(config.pruner))
    wanted = study_attrs(dataset, config)
    check_study(study, wanted, f"{config.study_name!r} in {redact(config.storage)}")
    for key in STUDY_KEYS:
        if key not in study.user_attrs:
            study.set_user_attr(key, wanted[key])
    return study


def load_study(config: TuneConfig, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """The existing study of ``config`` (``study_name`` in ``storage``).

    Raises
    ------
    TuneError
        No such study in the storage.
    StorageError
        The storage cannot be opened.
    """
    try:
        return optuna.load_study(study_name=config.study_name, storage=open_storage(config.storage),
                                 sampler=sampler, pruner=make_pruner(config.pruner))
    except KeyError:
        raise TuneError(f"study {config.study_name!r} not found in {redact(config.storage)}") from None


#: Trial states that count as finished towards a target.
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def n_finished(study: optuna.Study, group: str | None = None) -> int:
    """Trials of ``study`` that are COMPLETE or PRUNED (of ``group`` only, when given)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED_STATES)
               if group is None or t.user_attrs.get(GROUP_ATTR) == group)


def _n_running(study: optuna.Study, group: str | None) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if group is None or t.user_attrs.get(GROUP_ATTR) == group)


def study_inputs(config: TuneConfig, dataset: Dataset) -> np.ndarray:
    """The model inputs of ``dataset`` for ``config.preset``, built once per worker (float32 ``(N, C, S, S)``)."""
    preset = get_vetter(config.preset).pixel_preset()
    return build_inputs(dataset.stack_list(), preset.representation, preset.image_size)


def optimize(config: TuneConfig, dataset: Dataset, inputs: np.ndarray, target: int,
             hooks: TuneHooks | None = None, worker: int = 0, group: str | None = None) -> int:
    """The one tuning worker: run trials of the stored study until ``group`` holds ``target`` finished ones.

    Every worker, in ``tune`` (one in-process, or ``n_workers`` processes) and in
    ``tune-workers`` (on any machine), is this function. Before each trial it counts the
    group's trials (``group`` None: the whole study): it stops once ``target`` of them are
    COMPLETE or PRUNED; when the finished ones plus those RUNNING elsewhere would reach
    ``target``, it waits (:data:`POLL_S`) instead of starting another. A trial of a killed
    worker stops beating and, after the grace period, is failed here
    (:func:`pixel_cnn.search.storage.fail_stale_trials`) and re-queued with the same
    params: a live worker runs the copy, so a killed worker's share is taken over and no
    more trials than ``target`` are started (up to ``n_workers - 1`` more when two workers
    look at the same instant). Trials are seeded by number (:class:`TrialSeededSampler`) and
    pruned by ``config.pruner``; ``config.timeout`` (s): no trial starts after it.

    Returns
    -------
    int
        The number of trials this worker ran.

    Raises
    ------
    TuneError
        The study does not exist in the storage. An exception of a trial propagates (the
        trial is FAIL in the study).
    """
    hooks = hooks or TuneHooks()
    study = load_study(config, sampler=TrialSeededSampler(config.seed))
    objective = Objective(dataset, inputs, config, hooks, worker, group)
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    ran = 0
    while deadline is None or time.monotonic() < deadline:
        finished = n_finished(study, group)
        if finished >= target:
            break
        if finished + _n_running(study, group) >= target:
            fail_stale_trials(study)
            time.sleep(POLL_S)
            continue
        study.optimize(objective, n_trials=1, callbacks=[hooks], catch=())
        ran += 1
    return ran


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
        lines.append(f"- best trial {summary['best_trial']}: pooled OOF PR-AUC (average precision) "
                     f"**{summary['best_value']:.3f}** with {params}")
    if registered:
        lines.append(f"- best params cross-validated again (run {registered['run_id']}): pooled OOF PR-AUC "
                     f"**{registered['pr_auc_oof']:.3f}**, registered as version {registered['version']} @challenger")
    return "\n".join(lines) + "\n"
