"""What a branch of a vetter is: the small interface the one cv loop (:mod:`pixel_cnn.evaluation.cv`) drives.

A vetter is a list of branches plus, when there are several, a combiner
(:class:`pixel_cnn.vetter.combiner.Combiner`), in the spirit of scikit-learn's
``StackingClassifier``: each branch is fitted on a training side and scores other targets;
the combiner is fitted on the branches' inner out-of-fold predictions. Adding or replacing a
branch is one module under ``branches/`` and one line in :mod:`pixel_cnn.branches.vetters`.

No MLflow here; arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixel_cnn.stacks.dataset import Dataset


@dataclass
class Fitted:
    """A branch fitted on one training side, with its scores of the targets it was asked to score.

    Attributes
    ----------
    prob : float64 ``(len(score_idx),)``: probability of planet (CONFIRMED) of the scored targets.
    model : what the branch ships for this fit (the pixel branch: a network's ``state_dict``;
        the tabular branch: a fitted scikit-learn model).
    history : per-epoch losses (``train_loss``, ``val_loss``) of a network; empty otherwise.
    info : numbers worth logging with the fold (e.g. ``n_tabular_train_kois``).
    training_kepids : kepids of the stars the fit trained on (one entry per training row).
    """

    prob: np.ndarray
    model: object = None
    history: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, float] = field(default_factory=dict)
    training_kepids: np.ndarray | None = field(default=None, repr=False)


class Branch:
    """One branch of a vetter. Subclasses set :attr:`name` and implement :meth:`prepare` and :meth:`fit`.

    The cv calls :meth:`prepare` once with every target of the dataset, then :meth:`fit` for every
    inner and outer training side. Row indices refer to that dataset.
    """

    #: The branch's name: column suffix (``probability_<name>``), metric suffix, key in the served config.
    name: str = ""
    #: Whether the served vetter can answer from this branch alone (it has a threshold of its own).
    answers_alone: bool = False
    #: Training data of the branch's own beyond the cv's targets (the tabular branch: the labelled KOI
    #: table, ``kepid, kepoi_name, label`` + inputs), logged with the cv as a dataset input; None if none.
    training_table = None

    def prepare(self, dataset: Dataset) -> None:
        """Build this branch's inputs for every target of ``dataset`` (once per cv)."""
        raise NotImplementedError

    def fit(self, train_idx: np.ndarray, score_idx: np.ndarray, exclude_kepids: np.ndarray, seed: int,
            on_epoch=None) -> Fitted:
        """Train on what this branch may use and score the targets ``score_idx``.

        Parameters
        ----------
        train_idx : int ``(N,)``, rows of the dataset on the training side.
        score_idx : int ``(M,)``, rows to score (never trained on).
        exclude_kepids : int ``(K,)``: stars whose data must not train the branch (the scored
            stars, and in an inner split also the outer validation stars). A branch with training
            data of its own (the tabular branch's KOI table) drops every row of these stars.
        seed : int, seeds everything random in the fit.
        on_epoch : optional ``on_epoch(epoch, losses)`` for branches that train by epochs.
        """
        raise NotImplementedError

    def notes(self, idx: np.ndarray) -> dict[str, list]:
        """Extra per-target columns of the out-of-fold table for rows ``idx`` (e.g. the KOI used)."""
        return {}

    def explain(self, fitted: Fitted, idx: np.ndarray) -> np.ndarray | None:
        """Attribution maps of a fit on rows ``idx`` (None: this branch has none)."""
        return None

    def final(self, outer: list[Fitted], seed: int) -> object:
        """What the served vetter ships for this branch, from the fits of the ensemble folds (repeat 0)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """The branch's configuration as saved in the model's ``config.json``."""
        return {"name": self.name}
