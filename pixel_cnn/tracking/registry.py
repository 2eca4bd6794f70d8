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

    Returns a one-line description (``pixel-cnn version 3 (fusion, pooled OOF PR-AUC (average
    precision) 0.950, ROC-AUC 0.968, cv run <id>)``: :func:`version_headline`). Other URIs
    (``runs:/``, ``models:/m-<id>``, local paths) are checked by reading only their ``MLmodel``
    file (``mlflow.models.get_model_info``).

    Raises
    ------
    ModelURIError
        Unknown registered model, alias or version, or no model at another URI; the message
        names it and the tracking store.
    """
    match = _MODELS_URI.match(model_uri.strip())
    if not match or match["name"].startswith("m-"):
        from mlflow.models import get_model_info

        try:
            info = get_model_info(model_uri)
        except Exception as exc:  # noqa: BLE001 - MlflowException, OSError...: one line either way
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelURIError(f"model URI {model_uri!r}: no model there ({reason}); tracking store "
                                f"{mlflow.get_tracking_uri()}") from None
        return f"{model_uri} (a {info.flavors.get('python_function', {}).get('loader_module', 'MLflow')} model)"
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
    return f"{name} version {mv.version}" + (f" ({what})" if (what := version_headline(mv.tags)) else "")


def version_headline(tags: dict) -> str:
    """What a version is, in one line, from its tags: ``fusion, pooled OOF PR-AUC 0.950, ROC-AUC 0.968,
    cv run <id>`` ("" for a version without them)."""
    parts = [tags["preset"]] if tags.get("preset") else []
    if "pr_auc_oof" in tags:
        parts.append(f"pooled OOF PR-AUC (average precision) {float(tags['pr_auc_oof']):.3f}")
    if "roc_auc_oof" in tags:
        parts.append(f"ROC-AUC {float(tags['roc_auc_oof']):.3f}")
    if tags.get("cv_run_id"):
        parts.append(f"cv run {tags['cv_run_id']}")
    return ", ".join(parts)


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


#: What ``pixel-cnn`` is, the registered model's description (``mlflow ui``'s model page).
MODEL_DESCRIPTION = """Kepler planet-candidate vetter (CONFIRMED vs FALSE POSITIVE) from phase-binned
pixel-difference stacks and, for the fusion vetter, the star's KOI parameters.

- `@champion` is the served model (`make serve`, `make predict`). It moves only with `make cv` exactly as
  it is (the main job: fusion preset, default parameters), or through the promotion gate (`make promote`,
  or `cv -P alias=champion`): the challenger's pooled out-of-fold PR-AUC (average precision) must beat
  the champion's on the same dataset (`mlflow.validate_evaluation_results`).
- Any other cv that registers creates a version with `@challenger` (or no alias): it never moves `@champion`.
- Each version's description and tags hold its preset, headline figures (pooled OOF PR-AUC, ROC-AUC,
  recall at precision 0.99, Brier, threshold), dataset digest and the cv run behind it.
"""

#: Alias values of cv's ``alias`` parameter that are not alias names.
AUTO, NO_ALIAS = "auto", ("", "none")


def ensure_model_description(name: str = MODEL_NAME) -> None:
    """Create ``name`` if needed and give it :data:`MODEL_DESCRIPTION` (only when it has none)."""
    client = MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=MODEL_DESCRIPTION)
        return
    if not model.description:
        client.update_registered_model(name, description=MODEL_DESCRIPTION)


def register(model_info, tags: dict[str, str], alias: str = "", name: str = MODEL_NAME,
             description: str = "") -> str:
    """Register the logged model ``model_info`` as a new version of ``name``; returns the version.

    Only a model whose files are all in the artifact store is registered
    (:func:`verify_model_artifacts`: a remote store can fail mid-upload), never
    a version that points at missing artifacts. The version gets ``tags``
    (e.g. ``pr_auc_oof``, ``preset``, ``cv_run_id``), ``description`` (Markdown, shown on the
    version's page) and, when given, ``alias`` (set as it is: the champion policy is
    :func:`register_cv_version`'s).

    Raises
    ------
    StoreError
        A model file is missing from the artifact store; nothing is registered.
    """
    verify_model_artifacts(model_info)
    ensure_model_description(name)
    client = MlflowClient()
    version = str(mlflow.register_model(model_info.model_uri, name).version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if description:
        client.update_model_version(name, version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def alias_version(name: str, alias: str):
    """The ``ModelVersion`` of ``name@alias``, or None when the alias is not set."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_cv_version(model_info, tags: dict[str, str], alias: str, is_default_cv: bool,
                        name: str = MODEL_NAME, description: str = "") -> dict:
    """Register a cv's model and apply the champion policy; returns what happened.

    ``alias``:

    - ``auto`` (cv's default): ``champion`` when the cv is ``make cv`` exactly as it is
      (``is_default_cv``: the main job, whose model is the one served) or when there is no champion
      yet; otherwise ``challenger``: a cv of another preset or with other parameters never moves
      ``@champion``.
    - ``champion``: an explicit promotion: the version is registered as ``@challenger`` and moves
      ``@champion`` only when it passes the gate (:func:`promote`).
    - ``none`` or ``""``: no alias. Any other name: set as it is.

    Returns ``{"version", "alias" (the alias set, or ""), "champion" (version of @champion after),
    "reason" (one line, for the console)}``.
    """
    alias = (alias or "").strip()
    champion = alias_version(name, "champion")
    gate = None
    if alias.lower() in NO_ALIAS:
        target, reason = "", "no alias asked (alias=none)"
    elif alias == AUTO:
        if is_default_cv:
            target, reason = "champion", "make cv's default run (the main job) sets @champion"
        elif champion is None:
            target, reason = "champion", "no @champion yet"
        else:
            target = "challenger"
            reason = (f"preset {tags.get('preset')!r} or its parameters are not make cv's default: "
                      f"@champion stays version {champion.version}; compare with `make promote`")
    elif alias == "champion" and champion is None:
        target, reason = "champion", "no @champion yet"
    elif alias == "champion":
        target, gate = "challenger", True
        reason = ""
    else:
        target, reason = alias, f"alias {alias!r} as asked"
    version = register(model_info, tags, target, name, description)
    if gate:
        out = promote(name, "challenger", "champion")
        reason = ("passed the gate: " if out["promoted"] else "did not pass the gate, stays @challenger: ") \
            + out["reason"]
        target = "champion" if out["promoted"] else "challenger"
    after = alias_version(name, "champion")
    return {"version": version, "alias": target, "champion": after.version if after else None, "reason": reason}


def model_version_score(name: str, alias: str) -> tuple[str, float] | None:
    """``(version, OOF PR-AUC)`` of ``name@alias``, or None when the alias is not set.

    The score is the version tag ``pr_auc_oof`` set by :func:`register`.

    Raises
    ------
    ValueError
        The version has no ``pr_auc_oof`` tag (not registered by cv).
    """
    mv = alias_version(name, alias)
    if mv is None:
        return None
    if "pr_auc_oof" not in mv.tags:
        raise ValueError(f"{name} version {mv.version} (@{alias}) has no pr_auc_oof tag; "
                         "register it with the cv or tune entry point")
    return str(mv.version), float(mv.tags["pr_auc_oof"])


def promote(name: str = MODEL_NAME, challenger: str = "challenger",
            champion: str = "champion") -> dict:
    """Move ``champion`` to the ``challenger`` version if it passes the gate (:mod:`pixel_cnn.tracking.gate`).

    The gate evaluates both versions' out-of-fold predictions with ``mlflow.models.evaluate`` and
    decides with ``mlflow.validate_evaluation_results``: the challenger's pooled OOF PR-AUC (average
    precision) must beat the champion's by :data:`~pixel_cnn.tracking.gate.MIN_GAIN` and its recall at
    precision 0.99 must be at least the champion's, on the same
    dataset; with no champion yet the challenger is promoted. Returns ``{"challenger": (version,
    score), "champion": (version, score) or None, "promoted": bool, "reason": str, "figures":
    {"challenger": {metric: value}, "champion": {...}}, "presets": {...}, "gate_run_id": str}``
    (``champion`` = before the move).

    Raises
    ------
    ValueError
        No ``challenger`` alias on ``name``, or a version has neither OOF predictions nor a score tag.
    """
    from pixel_cnn.tracking import gate

    chal_mv = alias_version(name, challenger)
    if chal_mv is None:
        raise ValueError(f"{name} has no @{challenger} version; register one with "
                         "`make cv CV_ARGS=\"-P preset=...\"` or tune with register_best=true first")
    champ_mv = alias_version(name, champion)
    passed, reason, chal, champ, gate_run = gate.run_gate(
        name, (str(chal_mv.version), dict(chal_mv.tags)),
        (str(champ_mv.version), dict(champ_mv.tags)) if champ_mv is not None else None)
    if passed:
        client = MlflowClient()
        client.set_registered_model_alias(name, champion, chal.version)
        if champ is not None:
            client.set_model_version_tag(name, chal.version, "promoted_over_version", champ.version)
    return {"challenger": (chal.version, chal.metrics.get("pr_auc_oof")),
            "champion": (champ.version, champ.metrics.get("pr_auc_oof")) if champ else None,
            "promoted": passed, "reason": reason, "gate_run_id": gate_run,
            "figures": {"challenger": chal.metrics, "champion": champ.metrics if champ else {}},
            "presets": {"challenger": chal.preset, "champion": champ.preset if champ else ""}}


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


#: Models loaded in this process by :func:`load_once`: (tracking URI, model URI) -> model.
_LOADED: dict[tuple[str, str], object] = {}
#: How many times this process loaded each model (the tests check: once per worker).
LOADS: dict[tuple[str, str], int] = {}


def load_once(model_uri: str, tracking_uri: str = ""):
    """:func:`load` of ``model_uri`` from the store ``tracking_uri``, once per process.

    What an engine's worker process calls for every chunk it scores: the first
    call loads the model (pointing this process at ``tracking_uri`` when given),
    later ones return the same object. Raises :class:`ModelLoadError` like :func:`load`.
    """
    key = (tracking_uri, model_uri)
    if key not in _LOADED:
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        _LOADED[key] = load(model_uri)
        LOADS[key] = LOADS.get(key, 0) + 1
    return _LOADED[key]


def pinned_uri(model_uri: str) -> str:
    """``models:/<name>@<alias>`` -> ``models:/<name>/<version>`` the alias points at now; others unchanged.

    So every worker of a job loads the same version even if the alias moves meanwhile.
    Raises :class:`ModelLoadError` for an unknown name or alias.
    """
    text = str(model_uri)
    if not text.startswith("models:/") or "@" not in text:
        return text
    name, alias = text[len("models:/"):].split("@", 1)
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias).version
    except MlflowException as exc:
        raise ModelLoadError(f"cannot resolve {model_uri!r}: {str(exc).splitlines()[0]}") from None
    return f"models:/{name}/{version}"


def tracking_uri() -> str:
    """The tracking URI this process uses (``mlflow.get_tracking_uri()``), to hand to workers."""
    return str(mlflow.get_tracking_uri())
