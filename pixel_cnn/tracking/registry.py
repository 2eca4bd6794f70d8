"""The model registry: model URIs, registering a version with its scores, aliases, promotion.

``make serve`` checks the model URI first (``python -m entrypoints.check_model``), so a
typo never ends in an MLflow traceback.
"""

from __future__ import annotations

import re

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pixel_cnn.tracking import stores
from pixel_cnn.vetter.model import CONFIG_FILE, TABULAR_FILE, WEIGHTS_FILE

MODEL_NAME = "pixel-cnn"
#: The served model: what ``make serve``, ``make predict`` and ``python -m pixel_cnn.predict`` use by default.
CHAMPION_URI = f"models:/{MODEL_NAME}@champion"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class ModelURIError(LookupError):
    """The model URI names nothing in the tracking store; the message is one line naming it."""


def check_model_uri(model_uri: str) -> str:
    """Resolve ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` without loading the model.

    Returns a one-line description (``pixel-cnn version 3``). Other URI
    schemes (``runs:/``, ``models:/m-<id>``, local paths) are passed through:
    MLflow resolves them when it loads.

    Raises
    ------
    ModelURIError
        Unknown registered model, alias or version; the message names it and
        the tracking store.
    """
    match = _MODELS_URI.match(model_uri.strip())
    if not match or match["name"].startswith("m-"):
        return f"{model_uri} (not a registry URI; resolved when loaded)"
    name, alias, version = match["name"], match["alias"], match["version"]
    store = mlflow.get_tracking_uri()
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ModelURIError(
            f"model URI {model_uri!r}: no registered model named {name!r} in tracking store {store}"
        ) from None
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        known = sorted(client.get_registered_model(name).aliases) if alias else None
        what = f"alias {alias!r}" if alias else f"version {version!r}"
        hint = f" (known aliases: {known})" if alias else ""
        raise ModelURIError(
            f"model URI {model_uri!r}: registered model {name!r} has no {what}{hint} "
            f"in tracking store {store}"
        ) from None
    return f"{name} version {mv.version}"


#: Files every logged pixel-cnn pyfunc model holds (relative to the model's root).
MODEL_FILES = ("MLmodel", "serving_model.py", "requirements.txt", f"artifacts/{CONFIG_FILE}")
#: The file each branch adds.
BRANCH_FILES = {"pixel": f"artifacts/{WEIGHTS_FILE}", "tabular": f"artifacts/{TABULAR_FILE}"}


def model_files(branches) -> list[str]:
    """The files a logged vetter with ``branches`` must hold (:data:`MODEL_FILES` and each branch's)."""
    return [*MODEL_FILES, *(BRANCH_FILES[b] for b in branches)]


def verify_model_artifacts(model_info) -> None:
    """Raise :class:`~pixel_cnn.tracking.stores.StoreError` unless every file of the model is stored
    (:func:`model_files` of the branches its metadata names).

    Lists the logged model's artifacts through the tracking server (or the
    store directly); a missing file means a partial upload.
    """
    client = MlflowClient()
    found = set()
    for sub in ("", "artifacts"):
        found |= {a.path for a in client.list_logged_model_artifacts(model_info.model_id, sub or None)}
    branches = ((model_info.metadata or {}).get("vetter") or {}).get("branches", ["pixel"])
    missing = [f for f in model_files(branches) if f not in found]
    if missing:
        raise stores.StoreError(f"model {model_info.model_uri}: {missing} missing from the artifact store; "
                                "not registered")


def register(model_info, tags: dict[str, str], alias: str = "", name: str = MODEL_NAME) -> str:
    """Register the logged model ``model_info`` as a new version of ``name``; returns the version.

    Only a model whose files are all in the artifact store is registered
    (:func:`verify_model_artifacts`: a remote store can fail mid-upload), never
    a version that points at missing artifacts. The version gets ``tags``
    (e.g. ``pr_auc_oof``, ``preset``, ``cv_run_id``) and, when given, ``alias``.

    Raises
    ------
    StoreError
        A model file is missing from the artifact store; nothing is registered.
    """
    verify_model_artifacts(model_info)
    client = MlflowClient()
    version = str(mlflow.register_model(model_info.model_uri, name).version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def model_version_score(name: str, alias: str) -> tuple[str, float] | None:
    """``(version, OOF PR-AUC)`` of ``name@alias``, or None when the alias is not set.

    The score is the version tag ``pr_auc_oof`` set by :func:`register`.

    Raises
    ------
    ValueError
        The version has no ``pr_auc_oof`` tag (not registered by cv).
    """
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    if "pr_auc_oof" not in mv.tags:
        raise ValueError(f"{name} version {mv.version} (@{alias}) has no pr_auc_oof tag; "
                         "register it with the cv or tune entry point")
    return str(mv.version), float(mv.tags["pr_auc_oof"])


def promote(name: str = MODEL_NAME, challenger: str = "challenger",
            champion: str = "champion") -> dict:
    """Move ``champion`` to the ``challenger`` version if its OOF PR-AUC is higher.

    Higher means strictly higher ``pr_auc_oof`` tag (pooled out-of-fold average
    precision); with no champion yet the challenger is promoted. Returns
    ``{"challenger": (version, score), "champion": (version, score) or None,
    "promoted": bool, "reason": str}`` (``champion`` = before the move).

    Raises
    ------
    ValueError
        No ``challenger`` alias on ``name``, or a version lacks its score tag.
    """
    chal = model_version_score(name, challenger)
    if chal is None:
        raise ValueError(f"{name} has no @{challenger} version; run tune with register_best=true first")
    champ = model_version_score(name, champion)
    if champ is None:
        promoted, reason = True, f"no @{champion} yet"
    elif champ[0] == chal[0]:
        promoted, reason = False, f"@{challenger} is already @{champion}"
    elif chal[1] > champ[1]:
        promoted, reason = True, f"OOF PR-AUC {chal[1]:.4f} > {champ[1]:.4f}"
    else:
        promoted, reason = False, f"OOF PR-AUC {chal[1]:.4f} <= {champ[1]:.4f}"
    if promoted:
        client = MlflowClient()
        client.set_registered_model_alias(name, champion, chal[0])
        if champ is not None:
            client.set_model_version_tag(name, chal[0], "promoted_over_version", champ[0])
    return {"challenger": chal, "champion": champ, "promoted": promoted, "reason": reason}


# ---------------------------------------------------------------- loading a registered model


class ModelLoadError(RuntimeError):
    """A model URI that cannot be loaded; the message is one line naming it and the tracking store."""


def description(model) -> dict:
    """What a loaded model is (:meth:`pixel_cnn.vetter.model.Vetter.describe`), from its MLflow metadata.

    ``{}`` for a model logged without it (before the vetter described itself).
    """
    return dict(((getattr(model, "metadata", None) and model.metadata.metadata) or {}).get("vetter") or {})


def vetter_of(model):
    """The :class:`~pixel_cnn.vetter.model.Vetter` inside a loaded pixel-cnn pyfunc model (in-process
    batch scoring, attributions), or None for another model."""
    try:
        return getattr(model.unwrap_python_model(), "vetter", None)
    except AttributeError:
        return None


def load(model_uri: str):
    """``mlflow.pyfunc.load_model(model_uri)``: the served model, in this process.

    A ``models:/`` or ``runs:/`` URI is resolved by the tracking server: it is checked
    first (:func:`pixel_cnn.tracking.stores.check_tracking`, seconds), so a wrong
    ``MLFLOW_TRACKING_URI`` fails at once, not after MLflow's minutes of retries.

    Raises
    ------
    ModelLoadError
        Unreachable tracking server, unknown URI, or its files cannot be read (one line
        naming the URI and the tracking store).
    """
    if str(model_uri).startswith(("models:/", "runs:/")):
        try:
            stores.check_tracking()
        except stores.StoreError as exc:
            raise ModelLoadError(f"cannot load model {model_uri!r}: {exc}") from None
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model {model_uri!r} (tracking store "
                             f"{mlflow.get_tracking_uri()}): {first}") from None
