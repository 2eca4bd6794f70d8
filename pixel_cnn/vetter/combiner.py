"""The fusion vetter's combiner and its served form: pixel ensemble + tabular branch. Pure numpy/scikit-learn.

:class:`Combiner` joins the two branches' probabilities (a logistic regression on their
logits, fitted by :func:`pixel_cnn.evaluation.fusion.run_fusion_cv` on inner out-of-fold
predictions). :class:`FusionPredictor` is what the registered fusion model runs: raw stacks
plus optional KOI parameters in, each branch's probability and the fused call out.
The tabular model travels as a skops file (:func:`dumps_tabular`): scikit-learn trees
without pickle, loaded with an explicit list of trusted types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import tabular
from .ensemble import LABELS, Ensemble

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
EPS = 1e-6
#: The one type of a fitted ``HistGradientBoostingClassifier`` that skops does not trust by
#: default (scikit-learn's tree predictor); trusted by name when the served model loads.
SKOPS_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def logit(p) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[EPS, 1 - EPS]``, float64."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Combiner:
    """``P(CONFIRMED) = sigmoid(w_pixel * logit(p_pixel) + w_tabular * logit(p_tabular) + intercept)``.

    Stacked generalization (Wolpert 1992, Neural Networks 5, 241): a logistic regression on
    the branches' out-of-fold logits, fitted with scikit-learn ``LogisticRegression``
    (L2, C = 1, lbfgs).
    """

    w_pixel: float
    w_tabular: float
    intercept: float

    @classmethod
    def fit(cls, p_pixel, p_tabular, labels) -> "Combiner":
        from sklearn.linear_model import LogisticRegression

        x = np.column_stack([logit(p_pixel), logit(p_tabular)])
        lr = LogisticRegression(C=1.0).fit(x, np.asarray(labels).astype(int))
        return cls(float(lr.coef_[0, 0]), float(lr.coef_[0, 1]), float(lr.intercept_[0]))

    def predict(self, p_pixel, p_tabular) -> np.ndarray:
        """Fused probability of CONFIRMED, float64, the inputs' shape."""
        z = self.w_pixel * logit(p_pixel) + self.w_tabular * logit(p_tabular) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {"w_pixel": self.w_pixel, "w_tabular": self.w_tabular, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict) -> "Combiner":
        return cls(float(d["w_pixel"]), float(d["w_tabular"]), float(d["intercept"]))

    @classmethod
    def mean(cls, combiners: list["Combiner"]) -> "Combiner":
        """Coefficient-wise mean (the served combiner: the mean of the ensemble folds')."""
        return cls(*(float(np.mean([getattr(c, k) for c in combiners])) for k in ("w_pixel", "w_tabular", "intercept")))


def dumps_tabular(model) -> bytes:
    """A fitted tabular model as skops bytes (``skops.io.dumps``; no pickle)."""
    import skops.io as sio

    return sio.dumps(model)


def loads_tabular(data: bytes):
    """The tabular model from :func:`dumps_tabular` bytes; only :data:`SKOPS_TRUSTED` beyond skops' defaults.

    Raises
    ------
    skops.io.exceptions.UntrustedTypesFoundException
        The file holds another type (not a model this project wrote).
    """
    import skops.io as sio

    return sio.loads(data, trusted=SKOPS_TRUSTED)


class FusionPredictor:
    """The fusion vetter as served: pixel :class:`Ensemble`, tabular model, :class:`Combiner`.

    Parameters
    ----------
    ensemble : Ensemble
        The pixel branch; its ``threshold`` is the pixel-only threshold.
    tabular_model : fitted ``HistGradientBoostingClassifier`` on :data:`tabular.FEATURE_NAMES`.
    combiner : Combiner
    threshold : float
        Fused decision threshold.
    """

    def __init__(self, ensemble: Ensemble, tabular_model, combiner: Combiner, threshold: float):
        self.ensemble, self.tabular_model, self.combiner = ensemble, tabular_model, combiner
        self.threshold = float(threshold)
        names = list(getattr(tabular_model, "feature_names_in_", []))
        if names != list(tabular.FEATURE_NAMES):
            raise ValueError(f"tabular model inputs {names} are not {list(tabular.FEATURE_NAMES)}")

    def predict(self, stacks, params: dict | None = None) -> pd.DataFrame:
        """Raw stacks and optional KOI parameters -> one row per stack.

        Columns: ``probability`` (fused; the pixel branch's when no parameter is given),
        ``label``, ``threshold`` (the one ``label`` used), ``pixel_probability``,
        ``tabular_probability`` (None without parameters), ``branch`` (``fused`` / ``pixel``),
        ``inputs_used`` (``stack`` and the parameter names used, comma-separated).

        Raises
        ------
        StackError
            A stack cannot be used (as :meth:`Ensemble.predict_stacks`).
        pixel_cnn.vetter.tabular.TabularInputError
            A parameter is unknown, not a finite number, or out of physical range; or parameters
            came with more than one stack (they describe one star).
        """
        given = tabular.check_parameters(params or {})
        pixel = self.ensemble.predict_stacks(stacks)["probability"].to_numpy(np.float64)
        n = len(pixel)
        if not given:
            return pd.DataFrame({
                "probability": pixel, "label": [LABELS[int(p >= self.ensemble.threshold)] for p in pixel],
                "threshold": self.ensemble.threshold, "pixel_probability": pixel,
                "tabular_probability": [None] * n, "branch": "pixel", "inputs_used": "stack",
            })
        if n != 1:
            raise tabular.TabularInputError(f"KOI parameters describe one star: send one stack with them, not {n}")
        features = tabular.build_features(pd.DataFrame({k: [v] for k, v in given.items()}))
        p_tab = tabular.predict_tabular(self.tabular_model, features)
        fused = self.combiner.predict(pixel, p_tab)
        return pd.DataFrame({
            "probability": fused, "label": [LABELS[int(p >= self.threshold)] for p in fused],
            "threshold": self.threshold, "pixel_probability": pixel, "tabular_probability": p_tab,
            "branch": "fused", "inputs_used": ",".join(["stack", *[k for k in tabular.ALLOWED_INPUTS if k in given]]),
        })

