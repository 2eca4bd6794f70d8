"""Evaluation: grouped cross-validation of any vetter (``cv``), scores and intervals
(``metrics``), presets side by side on the same folds (``quality``). No MLflow here."""
