"""The served vetter: its branches, its combiner and its configuration, read once from one folder.

On disk a vetter is a folder: ``config.json`` (what it is: its name, branches, thresholds, the
combiner, the pixel branch's preset, the stars it was trained on, provenance), ``weights.pt``
(the pixel branch's fold networks, one ``state_dict`` each, loaded with
``torch.load(weights_only=True)``: a format that cannot run code) when it has a pixel branch,
and ``tabular.skops`` (the tabular branch, skops: no pickle) when it has a tabular branch, with
``koi_catalogue.csv`` (the KOI context catalogue, :mod:`.context`: name, position, period, epoch,
depth and magnitude of every KOI, no disposition) that its context features are computed against.
:meth:`Vetter.describe` answers what it is, for ``predict``, scoring, sheets and the registry
(the logged model carries the same dict as MLflow model metadata, ``vetter``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import tabular
from .combiner import Combiner
from .ensemble import LABELS, Ensemble
from .networks import Preset

CONFIG_FILE, WEIGHTS_FILE, TABULAR_FILE = "config.json", "weights.pt", "tabular.skops"
CATALOGUE_FILE = "koi_catalogue.csv"


class Vetter:
    """Raw stacks (and, with a tabular branch, the star's KOI parameters) in; each branch's and the fused call out.

    Parameters
    ----------
    config : dict
        The saved configuration (:meth:`save` writes it): ``vetter`` (name), ``branches``
        (names in combiner order), ``threshold`` (the vetter's decision threshold: the fused
        one with a combiner), ``thresholds`` (per branch, for answers from one branch alone),
        ``combiner`` (:meth:`Combiner.to_dict`, or None), ``preset`` (the pixel branch's),
        ``training_kepids`` and provenance.
    pixel : Ensemble or None
        The pixel branch (its ``threshold`` is the pixel-only threshold).
    tabular_model : fitted scikit-learn ``HistGradientBoostingClassifier`` on
        :data:`~.tabular.FEATURE_NAMES`, or None.
    catalogue : DataFrame or None
        The KOI context catalogue (:func:`.context.catalogue_of` columns, measurements only): a
        candidate's context features are computed against it from its own ``ra``, ``dec``,
        period, epoch, depth and magnitude, whether or not it is in it. None: context features NaN.

    Raises
    ------
    ValueError
        The configuration names a branch that was not given, or the tabular model reads other
        inputs than :data:`~.tabular.FEATURE_NAMES`.
    """

    def __init__(self, config: dict, pixel: Ensemble | None = None, tabular_model=None,
                 catalogue: pd.DataFrame | None = None):
        self.config = config
        self.catalogue = catalogue
        self.name = str(config.get("vetter", ""))
        self.branches = tuple(config["branches"])
        self.threshold = float(config["threshold"])
        self.thresholds = {k: float(v) for k, v in config.get("thresholds", {}).items()}
        self.combiner = Combiner.from_dict(config["combiner"]) if config.get("combiner") else None
        #: kepids of the stars the vetter was trained on (every cv target): their scores are in-sample
        self.training_kepids = frozenset(int(k) for k in config.get("training_kepids", ()))
        self.pixel, self.tabular_model = pixel, tabular_model
        if ("pixel" in self.branches) != (pixel is not None):
            raise ValueError(f"branches {list(self.branches)}: pixel ensemble {'missing' if pixel is None else 'not expected'}")
        if ("tabular" in self.branches) != (tabular_model is not None):
            raise ValueError(f"branches {list(self.branches)}: tabular model {'missing' if tabular_model is None else 'not expected'}")
        if tabular_model is not None:
            names = list(getattr(tabular_model, "feature_names_in_", []))
            if names != list(tabular.FEATURE_NAMES):
                raise ValueError(f"tabular model inputs {names} are not {list(tabular.FEATURE_NAMES)}")

    # -- files -------------------------------------------------------------------------------
    @staticmethod
    def save(folder: Path, config: dict, pixel_state_dicts: list[dict] | None = None,
             tabular_model=None, catalogue: pd.DataFrame | None = None) -> dict[str, str]:
        """Write the vetter's files into ``folder``; returns the MLflow ``artifacts`` map (name -> path)."""
        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        artifacts = {"config": str(folder / CONFIG_FILE)}
        if pixel_state_dicts is not None:
            torch.save([dict(sd) for sd in pixel_state_dicts], folder / WEIGHTS_FILE)
            artifacts["weights"] = str(folder / WEIGHTS_FILE)
        if tabular_model is not None:
            (folder / TABULAR_FILE).write_bytes(tabular.dumps_tabular(tabular_model))
            artifacts["tabular"] = str(folder / TABULAR_FILE)
        if catalogue is not None:
            from .context import check_catalogue

            check_catalogue(catalogue)  # measurements only: an answer column is refused before it ships
            catalogue.to_csv(folder / CATALOGUE_FILE, index=False, float_format="%.10g")
            artifacts["catalogue"] = str(folder / CATALOGUE_FILE)
        return artifacts

    @classmethod
    def from_files(cls, folder: str | Path) -> "Vetter":
        """The vetter saved in ``folder`` by :meth:`save` (``config.json`` read once)."""
        import torch

        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        pixel = tabular_model = catalogue = None
        if "pixel" in config["branches"]:
            state_dicts = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            pixel = Ensemble(Preset.from_dict(config["preset"]), state_dicts, config["thresholds"]["pixel"])
        if "tabular" in config["branches"]:
            tabular_model = tabular.loads_tabular((folder / TABULAR_FILE).read_bytes())
            if (folder / CATALOGUE_FILE).is_file():
                from .context import check_catalogue

                catalogue = pd.read_csv(folder / CATALOGUE_FILE, dtype={"kepoi_name": str})
                check_catalogue(catalogue)
        return cls(config, pixel, tabular_model, catalogue)

    # -- what it is -----------------------------------------------------------------------------
    @property
    def accepts_parameters(self) -> bool:
        """True when the vetter reads KOI parameters (it has a tabular branch)."""
        return self.tabular_model is not None

    def describe(self) -> dict:
        """What the vetter is, as plain data: name, branches, thresholds, combiner, the KOI parameters it
        reads (names and units), the pixel preset's name, the number of training stars, scores and provenance
        recorded at training (``pr_auc_oof``, ``cv_run_id``, ``dataset_digest`` ... where present)."""
        keep = {k: v for k, v in self.config.items() if k not in ("preset", "training_kepids")}
        return {
            **keep,
            "pixel_preset": (self.config.get("preset") or {}).get("name"),
            "parameters": {k: v[0] for k, v in tabular.SERVED_PARAMETERS.items()} if self.accepts_parameters else {},
            "catalogue_kois": 0 if self.catalogue is None else int(len(self.catalogue)),
            "n_training_stars": len(self.training_kepids),
        }

    # -- answers ----------------------------------------------------------------------------------
    def predict(self, stacks, params: dict | None = None) -> pd.DataFrame:
        """Raw stacks and optional KOI parameters (of one star) -> one row per stack.

        Columns: ``probability``, ``label`` (at ``threshold``), ``threshold``; a vetter with a tabular
        branch also gives ``pixel_probability``, ``tabular_probability`` (None without parameters),
        ``branch`` (``fused``, ``pixel`` or ``tabular``: what answered), ``inputs_used`` (``stack``,
        the parameter names used and ``koi_catalogue`` when context features were computed against the
        shipped catalogue, comma-separated) and ``tabular_reason`` (why
        ``tabular_probability`` is None; None when it answered). A vetter with a pixel branch given no
        parameters answers from its pixel branch alone, at the pixel-only threshold. A vetter without
        a tabular branch given KOI parameters answers from its stack and says so: the same columns,
        ``tabular_probability`` None and ``tabular_reason`` naming the parameters not used.

        Raises
        ------
        StackError
            A stack cannot be used (as :meth:`Ensemble.predict_stacks`).
        pixel_cnn.vetter.tabular.TabularInputError
            A parameter is unknown, not a finite number, or out of physical range; parameters came
            with more than one stack (they describe one star); or a vetter without a pixel branch
            got no parameters.
        """
        given = tabular.check_parameters(params or {}) if self.accepts_parameters else {}
        ignored = tabular.check_parameters(params) if params and not self.accepts_parameters else {}
        pixel = None
        if self.pixel is not None:
            pixel = self.pixel.predict_stacks(stacks)["probability"].to_numpy(np.float64)
        n = len(pixel) if pixel is not None else len(list(stacks))
        if not self.accepts_parameters:
            out = pd.DataFrame({"probability": pixel, "label": [LABELS[int(p >= self.threshold)] for p in pixel],
                                "threshold": self.threshold})
            if ignored:  # said in the answer, never silently dropped
                out = out.assign(pixel_probability=pixel, tabular_probability=[None] * n, branch="pixel",
                                 inputs_used="stack", tabular_reason=(
                                     f"vetter {self.name!r} has no tabular branch: the KOI parameters "
                                     f"{', '.join(k for k in tabular.SERVED_PARAMETERS if k in ignored)} were not used"))
            return out
        if not given:
            if pixel is None:
                raise tabular.TabularInputError(
                    f"vetter {self.name!r} reads KOI parameters only: send them as params "
                    f"({', '.join(tabular.SERVED_PARAMETERS)})")
            t = self.thresholds["pixel"]
            return pd.DataFrame({
                "probability": pixel, "label": [LABELS[int(p >= t)] for p in pixel], "threshold": t,
                "pixel_probability": pixel, "tabular_probability": [None] * n, "branch": "pixel",
                "inputs_used": "stack", "tabular_reason": "no KOI parameter given: the answer is the pixel branch's",
            })
        if n != 1:
            raise tabular.TabularInputError(f"KOI parameters describe one star: send one stack with them, not {n}")
        return self._answer(pixel, given)

    def predict_each(self, stacks: list, params: list[dict | None]) -> pd.DataFrame:
        """One row per stack, each with its own star's KOI parameters (``params[i]``, None = none).

        Batch scoring of a catalogue: the pixel branch scores every stack in one call; the
        answers equal :meth:`predict` of each stack with its parameters.
        """
        if len(params) != len(stacks):
            raise ValueError(f"{len(stacks)} stacks but {len(params)} parameter sets")
        if not self.accepts_parameters or self.pixel is None:
            return pd.concat([self.predict([s], p) for s, p in zip(stacks, params)], ignore_index=True)
        base = self.predict(stacks)  # pixel-only answers, one batched forward pass
        rows = [base.iloc[[i]] if not p else self._with_parameters(base.iloc[[i]], p)
                for i, p in enumerate(params)]
        return pd.concat(rows, ignore_index=True)

    def _with_parameters(self, pixel_row: pd.DataFrame, params: dict) -> pd.DataFrame:
        """The answer of one star from its pixel-only row and its KOI parameters."""
        given = tabular.check_parameters(params)
        return self._answer(pixel_row["pixel_probability"].to_numpy(np.float64), given) if given else pixel_row

    def _answer(self, pixel: np.ndarray | None, given: dict[str, float]) -> pd.DataFrame:
        """One star's answer from its pixel probability ``(1,)`` (None: no pixel branch) and checked parameters."""
        features = tabular.build_features(pd.DataFrame({k: [v] for k, v in given.items()}), self.catalogue)
        p_tab = tabular.predict_tabular(self.tabular_model, features)
        used = [k for k in tabular.SERVED_PARAMETERS if k in given]
        if self.catalogue is not None and features[list(tabular.CONTEXT_FEATURES)].notna().any(axis=None):
            used.append("koi_catalogue")  # context features computed against the shipped catalogue
        if pixel is None:
            prob, branch = p_tab, "tabular"
        else:
            prob = self.combiner.predict([{"pixel": pixel, "tabular": p_tab}[b] for b in self.combiner.names])
            branch, used = "fused", ["stack", *used]
        return pd.DataFrame({
            "probability": prob, "label": [LABELS[int(p >= self.threshold)] for p in prob],
            "threshold": self.threshold, "pixel_probability": pixel if pixel is not None else [None],
            "tabular_probability": p_tab, "branch": branch, "inputs_used": ",".join(used), "tabular_reason": None,
        })
