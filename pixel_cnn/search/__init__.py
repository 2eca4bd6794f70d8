"""Hyper-parameter search: the Optuna search space, objective and worker (``tuning``) and where a
study is stored (``storage``: URLs, locks)."""
