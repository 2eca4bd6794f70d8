"""CNN study: one CNN variant, 5 repeats of the cv folds, pooled PR-AUC / ROC-AUC; appends to a JSON.

PR-AUC and ROC-AUC do not depend on the decision threshold, and the outer
networks' seeds do not depend on ``inner_folds``, so ``inner_folds=0`` gives the
same two figures as the default protocol at a quarter of the training.

Usage::

    python bench/cnn_study.py --preset phase2 [--arch phase] [--extra-train koi] [--repeats 5]

Results go to ``bench/results/cnn_study.json`` (one entry per call, in call order).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from pixel_cnn.evaluation.quality import fold_digest, per_repeat_scores  # noqa: E402
from pixel_cnn.branches.pixel import PixelBranch  # noqa: E402
from pixel_cnn.evaluation.cv import run_cv  # noqa: E402
from pixel_cnn.io.dataset import prepare_dataset  # noqa: E402
from pixel_cnn.vetter.networks import get_preset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="phase2")
    parser.add_argument("--arch", default=None, help="override the preset's arch")
    parser.add_argument("--extra-train", choices=("none", "koi"), default="none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=str(PROJECT / "bench/results/cnn_study.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    dataset = prepare_dataset(None, "seed")
    extra = prepare_dataset(None, "koi") if args.extra_train == "koi" else None
    preset = get_preset(args.preset, arch=args.arch)
    start = time.perf_counter()
    result = run_cv(dataset, [PixelBranch(preset, extra_train=extra)], seed=args.seed, repeats=args.repeats,
                    inner_folds=0)
    wall = time.perf_counter() - start
    scores = per_repeat_scores(result)
    entry = {"preset": args.preset, "arch": preset.arch, "representation": preset.representation,
             "extra_train": args.extra_train, "repeats": args.repeats, "seed": args.seed,
             "fold_digest": fold_digest(result), "wall_s": round(wall, 1),
             "pr_auc_ci95": [result.summary["pr_auc_oof_ci_low"], result.summary["pr_auc_oof_ci_high"]]}
    for m in ("pr_auc", "roc_auc", "brier"):
        entry[m] = {"mean": float(scores[m].mean()), "std": float(scores[m].std(ddof=1)),
                    "per_repeat": [float(v) for v in scores[m]]}
    print(f"{args.preset} arch={preset.arch} extra={args.extra_train}: "
          f"PR-AUC {entry['pr_auc']['mean']:.3f} +/- {entry['pr_auc']['std']:.3f}, "
          f"ROC-AUC {entry['roc_auc']['mean']:.3f} +/- {entry['roc_auc']['std']:.3f}, "
          f"CI {entry['pr_auc_ci95'][0]:.3f}-{entry['pr_auc_ci95'][1]:.3f}, {wall:.0f} s")
    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.exists() else []
    runs.append(entry)
    out.write_text(json.dumps(runs, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
