"""The work behind each entry point, one module per job: ``prep`` (stacks or TPFs -> dataset),
``cv`` (cross-validate, log, register), ``tune`` (Optuna study and its workers) and ``bench``
(quality and tabular benchmarks). Entry points only parse arguments.

Each job joins the science (:mod:`pixel_cnn.evaluation`, :mod:`pixel_cnn.branches`, ...), the
files (:mod:`pixel_cnn.io`) and the MLflow side (:mod:`pixel_cnn.tracking`); it makes no MLflow
call itself. A prepared dataset is always opened by
:func:`pixel_cnn.tracking.runs.open_dataset` (a folder or a ``runs:/`` URI), once per job.
"""
