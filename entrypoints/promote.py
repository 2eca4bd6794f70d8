"""`make promote`: move pixel-cnn@champion to @challenger if it passes the gate.

The gate (:mod:`pixel_cnn.tracking.gate`) evaluates both versions' out-of-fold predictions with
``mlflow.models.evaluate`` and moves ``@champion`` only when the challenger's pooled OOF PR-AUC
(average precision) beats the champion's on the same dataset. Prints both versions' headline
figures side by side and why ``@champion`` did or did not move. Exit 0 = decided (moved or not),
2 = nothing to decide (no challenger, a version without scores).
"""

import argparse
import sys

from pixel_cnn.tracking.gate import HEADLINE
from pixel_cnn.tracking.registry import MODEL_NAME, promote


def side_by_side(out: dict, model: str, challenger: str, champion: str) -> str:
    """The two versions' headline figures as a small fixed-width table."""
    champ = out["champion"]
    head = [f"@{challenger} v{out['challenger'][0]} ({out['presets']['challenger']})",
            f"@{champion} v{champ[0]} ({out['presets']['champion']})" if champ else f"@{champion}: not set"]
    width = max(len(label) for _, label, _ in HEADLINE)
    lines = [f"{model}".ljust(width) + "  " + head[0].ljust(28) + "  " + head[1]]
    for key, label, _ in HEADLINE:
        vals = [out["figures"]["challenger"].get(key), out["figures"]["champion"].get(key)]
        cells = [f"{v:.4f}" if v is not None else "-" for v in vals]
        lines.append(label.ljust(width) + "  " + cells[0].ljust(28) + "  " + (cells[1] if champ else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL_NAME)
    parser.add_argument("--challenger", default="challenger")
    parser.add_argument("--champion", default="champion")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = promote(args.model, args.challenger, args.champion)
    except ValueError as exc:
        print(f"promote: {exc}", file=sys.stderr)
        return 2
    print(side_by_side(out, args.model, args.challenger, args.champion))
    v_chal = out["challenger"][0]
    verdict = f"@{args.champion} -> v{v_chal}" if out["promoted"] else f"@{args.champion} unchanged"
    print(f"promote: {verdict} ({out['reason']}); gate run {out['gate_run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
