"""The combiner of a vetter with several branches: a logistic regression on their logits. Pure numpy.

Fitted by the cv (:func:`pixel_cnn.evaluation.cv.run_cv`) on the branches' inner out-of-fold
predictions; the served vetter (:class:`~.model.Vetter`) ships the mean of the ensemble folds'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
EPS = 1e-6


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
