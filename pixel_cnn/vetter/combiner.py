"""The combiner of a vetter with several branches: a logistic regression on their logits. Pure numpy.

Chosen by the cv (:func:`pixel_cnn.evaluation.cv.run_cv`) on the branches' inner out-of-fold
predictions (:meth:`Combiner.select`: a branch as it is, or a logistic regression on the branches
that help; a branch that adds nothing gets weight 0); the served vetter (:class:`~.model.Vetter`) ships the mean of the
ensemble folds'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
EPS = 1e-6
#: Folds of the split that scores each candidate combiner in :meth:`Combiner.select`.
SELECT_FOLDS = 5


def logit(p) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[EPS, 1 - EPS]``, float64."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Combiner:
    """``P(CONFIRMED) = sigmoid(sum_b w_b * logit(p_b) + intercept)`` over the branches ``b`` of a vetter.

    Stacked generalization (Wolpert 1992, Neural Networks 5, 241): a logistic regression on
    the branches' out-of-fold logits, fitted with scikit-learn ``LogisticRegression``
    (L2, C = 1, lbfgs).

    Attributes
    ----------
    names : the branches, in the order of ``weights`` (and of the probabilities given to
        :meth:`predict`).
    weights : one coefficient per branch. intercept : float.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float

    @classmethod
    def fit(cls, probs: list, labels, names) -> "Combiner":
        """Fit on one probability array per branch (each ``(N,)``) and 0/1 labels ``(N,)``."""
        from sklearn.linear_model import LogisticRegression

        x = np.column_stack([logit(p) for p in probs])
        lr = LogisticRegression(C=1.0).fit(x, np.asarray(labels).astype(int))
        return cls(tuple(names), tuple(float(w) for w in lr.coef_[0]), float(lr.intercept_[0]))

    @classmethod
    def select(cls, probs: list, labels, names, seed: int) -> tuple["Combiner", dict]:
        """The combiner that predicts best out of fold on the inner predictions: a branch as it is, or a fit.

        Candidates: each branch **as it is** (weight 1 on its logit, 0 on the others, intercept 0:
        nothing fitted), and a logistic regression (:meth:`fit`) on the logits of every non-empty
        subset of the branches (one branch alone is Platt scaling of it, Platt 1999). Each is scored
        by its log loss on the points it would be fitted on, the branches' inner out-of-fold
        predictions: an as-is candidate directly, a fitted one out of fold over a stratified
        :data:`SELECT_FOLDS`-fold split (seed ``seed``; fewer folds when a class has fewer targets;
        with fewer than 2 of a class only the as-is candidates and the fit of every branch
        compete, that fit scored in sample). The lowest log loss wins; a tie goes to fewer fitted
        parameters (as is: 0; a fit on ``k`` branches: ``k + 1``). A fitted winner is refitted on
        every point. The choice never sees the outer validation targets.

        Why: on the 97 benchmark the inner predictions are about 77 stars per fold. A combiner
        refitted there is noisy (the tabular weight ranged 0.63-1.37 over 25 folds), and
        the pooled out-of-fold ranking, which mixes folds, paid for that noise even where the
        pixel branch had weight 0. Keeping a branch as it is costs no variance. This is
        cross-validatory choice (Stone 1974, J. R. Stat. Soc. B 36, 111) inside stacked
        generalization (Wolpert 1992); a branch that adds nothing is left out rather than fitted
        to noise.

        Parameters
        ----------
        probs : one float array ``(N,)`` per branch (probability of CONFIRMED), in ``names`` order.
        labels : 0/1 ``(N,)``. names : the branches. seed : int, seeds the split.

        Returns
        -------
        ``(combiner, info)``: ``combiner`` has one weight per branch of ``names`` (0.0 for a branch
        left out); ``info`` is ``{"combiner_uses_<branch>": 1.0 or 0.0, "combiner_refit": 1.0 for a
        fitted winner else 0.0, "combiner_logloss_<candidate>": its log loss}`` with candidates
        ``<branch>_as_is`` and ``fit_<branches joined by _>`` (an MLflow metric name allows no ``+``).
        """
        from itertools import combinations

        from sklearn.metrics import log_loss
        from sklearn.model_selection import StratifiedKFold

        names, y = tuple(names), np.asarray(labels).astype(int)
        probs = [np.asarray(p, dtype=np.float64) for p in probs]

        def loss(p) -> float:
            return float(log_loss(y, np.clip(p, EPS, 1 - EPS), labels=[0, 1]))

        # candidate -> (log loss, fitted parameters, branch indices, refit)
        scored: dict[str, tuple[float, int, tuple[int, ...], bool]] = {}
        for i, n in enumerate(names):
            scored[f"{n}_as_is"] = (loss(probs[i]), 0, (i,), False)
        n_splits = min(SELECT_FOLDS, int(np.bincount(y, minlength=2).min()))
        if n_splits < 2:  # too few of a class to split: the fit of every branch, scored in sample
            subsets, split = [tuple(range(len(names)))], [(np.arange(len(y)), np.arange(len(y)))]
        else:
            subsets = [s for k in range(1, len(names) + 1) for s in combinations(range(len(names)), k)]
            split = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(y, y))
        for subset in subsets:
            oof = np.empty(len(y))
            for tr, va in split:
                part = cls.fit([probs[i][tr] for i in subset], y[tr], [names[i] for i in subset])
                oof[va] = part.predict([probs[i][va] for i in subset])
            scored["fit_" + "_".join(names[i] for i in subset)] = (loss(oof), len(subset) + 1, subset, True)
        best = min(scored, key=lambda c: (round(scored[c][0], 12), scored[c][1]))
        _, _, subset, refit = scored[best]
        if refit:
            chosen = cls.fit([probs[i] for i in subset], y, [names[i] for i in subset])
            weights, intercept = dict(zip(chosen.names, chosen.weights)), chosen.intercept
        else:
            weights, intercept = {names[subset[0]]: 1.0}, 0.0
        info = {f"combiner_uses_{n}": float(n in weights) for n in names}
        info["combiner_refit"] = float(refit)
        info.update({f"combiner_logloss_{c}": v[0] for c, v in scored.items()})
        return cls(names, tuple(weights.get(n, 0.0) for n in names), intercept), info

    def predict(self, probs: list) -> np.ndarray:
        """Fused probability of CONFIRMED, float64, the inputs' shape (one array per branch, in :attr:`names` order)."""
        z = self.weights[0] * logit(probs[0])
        for w, p in zip(self.weights[1:], probs[1:]):
            z = z + w * logit(p)
        z = z + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        """``{"w_<branch>": weight, ..., "intercept": b}`` (branch order kept)."""
        return {**{f"w_{n}": w for n, w in zip(self.names, self.weights)}, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict) -> "Combiner":
        names = tuple(k[2:] for k in d if k.startswith("w_"))
        return cls(names, tuple(float(d[f"w_{n}"]) for n in names), float(d["intercept"]))

    @classmethod
    def mean(cls, combiners: list["Combiner"]) -> "Combiner":
        """Coefficient-wise mean (the served combiner: the mean of the ensemble folds')."""
        names = combiners[0].names
        weights = tuple(float(np.mean([c.weights[i] for c in combiners])) for i in range(len(names)))
        return cls(names, weights, float(np.mean([c.intercept for c in combiners])))
