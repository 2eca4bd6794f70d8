"""Check a model URI against the tracking store before anything loads or serves it.

    python -m pixel_cnn.registry models:/pixel-cnn@champion

prints ``models:/pixel-cnn@champion -> pixel-cnn version 3`` and exits 0, or
one line naming the unknown model, alias or version on stderr and exits 2.
``make serve`` runs it first, so a typo never ends in an MLflow traceback.
Tracking-only module: the MLflow calls of this check live here, next to
:mod:`pixel_cnn.tracking` (which imports torch and matplotlib; this does not).
"""

from __future__ import annotations

import re
import sys

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
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m pixel_cnn.registry MODEL_URI", file=sys.stderr)
        return 2
    try:
        print(f"{argv[0]} -> {check_model_uri(argv[0])}")
    except ModelURIError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
