"""Print the address that opens ``mlflow ui`` on the cv runs, in its model-training view.

    python -m entrypoints.ui_link http://127.0.0.1:5000

prints ``http://127.0.0.1:5000/#/experiments/2?workflowType=machine_learning`` (the experiment
``pixel-cnn-cv`` of the store in ``MLFLOW_TRACKING_URI``; the experiments list when it does not
exist yet). ``make ui`` prints it before starting the UI.

Why a link: MLflow 3.17's UI ignores the ``mlflow.experimentKind`` experiment tag while its global
"GenAI | Model training" switch is shown, and that switch starts on GenAI (traces, an assistant).
Its ``workflowType`` query parameter (``genai`` or ``machine_learning``) selects the view; checked in
headless Chromium against MLflow 3.17.2 (``mlflow/server/js``: ``WorkflowType.MACHINE_LEARNING``).
"""

from __future__ import annotations

import sys

from mlflow.tracking import MlflowClient

from pixel_cnn.tracking.runs import EXPERIMENT_CV

#: ``mlflow ui``'s query parameter for its global view, and the value of its model-training view.
WORKFLOW_QUERY = "workflowType=machine_learning"


def ui_link(base_url: str, experiment: str = EXPERIMENT_CV) -> str:
    """The ``mlflow ui`` address of ``experiment``'s runs in the model-training view (str).

    ``base_url``: the UI's address, e.g. ``http://127.0.0.1:5000``. Reads the experiment id from the
    tracking store (``MLFLOW_TRACKING_URI``); without that experiment, the experiments list.
    """
    found = MlflowClient().get_experiment_by_name(experiment)
    page = f"experiments/{found.experiment_id}" if found is not None else "experiments"
    return f"{base_url.rstrip('/')}/#/{page}?{WORKFLOW_QUERY}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m entrypoints.ui_link BASE_URL", file=sys.stderr)
        return 2
    print(f"open {ui_link(argv[0])}  (the cv runs, model-training view)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
