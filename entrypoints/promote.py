"""`make promote`: move pixel-cnn@champion to @challenger if its OOF PR-AUC is higher."""

import argparse
import sys

from pixel_cnn.tracking.registry import MODEL_NAME, promote


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=MODEL_NAME)
    parser.add_argument("--challenger", default="challenger")
    parser.add_argument("--champion", default="champion")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        out = promote(args.model, args.challenger, args.champion)
    except ValueError as exc:
        print(f"promote: {exc}", file=sys.stderr)
        return 2
    (v_chal, s_chal), champ = out["challenger"], out["champion"]
    print(f"promote: @{args.challenger} = {args.model} v{v_chal}, OOF PR-AUC (average precision) {s_chal:.4f}")
    print(f"promote: @{args.champion} = " + (f"{args.model} v{champ[0]}, OOF PR-AUC {champ[1]:.4f}"
                                            if champ else "not set"))
    verdict = f"@{args.champion} -> v{v_chal}" if out["promoted"] else f"@{args.champion} unchanged"
    print(f"promote: {verdict} ({out['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
