"""core/quality.py and the bench_quality job: presets side by side on the same folds."""

from __future__ import annotations

import numpy as np
import pytest

from pixel_cnn.vetter import networks as models


@pytest.mark.slow
def test_bench_quality_same_folds_table_and_json(tracking_store, prepared_dir, monkeypatch):
    import json

    from pixel_cnn.jobs.bench import bench_quality

    for name in ("seed", "phase"):  # 1 epoch: checked are the shared folds, the table and the JSON, not scores
        monkeypatch.setitem(models.PRESETS, name, models.PRESETS[name].replace(epochs=1))
    out = tracking_store / "quality.json"
    bench, table = bench_quality(str(prepared_dir), ("seed", "phase"), n_folds=2, repeats=2,
                                      inner_folds=2, out=str(out))
    saved = json.loads(out.read_text())
    assert saved["fold_digest"] == bench["fold_digest"] and list(saved["presets"]) == ["seed", "phase"]
    for name, entry in saved["presets"].items():
        assert len(entry["pr_auc"]["per_repeat"]) == 2
        assert entry["pr_auc"]["mean"] == pytest.approx(np.mean(entry["pr_auc"]["per_repeat"]))
        assert f"| {name} | {entry['pr_auc']['mean']:.3f}" in table


def test_merge_benches_requires_same_folds():
    from pixel_cnn.evaluation.quality import merge_benches

    base = {"protocol": {"seed": 42}, "dataset_digest": "d", "fold_digest": "f", "n_targets": 97}
    a = {**base, "presets": {"seed": {"x": 1}}, "run_id": "r1"}
    b = {**base, "presets": {"phase": {"x": 2}}, "run_id": "r2"}
    merged = merge_benches([a, b])
    assert list(merged["presets"]) == ["seed", "phase"] and merged["run_ids"] == ["r1", "r2"]
    with pytest.raises(ValueError, match="fold_digest"):
        merge_benches([a, {**b, "fold_digest": "other"}])
