"""Write larger classification test sets for an existing world (the "4k" / "5k" columns of benchmarks/RESULTS.md).

    .venv/bin/python experiments/extra_test.py runs/q/world runs/q/extra_test            # 500 per class
    .venv/bin/python experiments/extra_test.py runs/q/world runs/q/extra_test --per-class 1000

The `default` world's test splits hold 50 images per class (400 shape, 500 colour), so sampling noise alone
is about +-2.3 pt on a 30% shape score: as large as the differences the quality targets are about. These sets
are drawn like the world's own test split from a separate stream (the world and the runs trained on it are
unchanged) and read as ImageFolder sets: `clipdistill eval zeroshot --data OUT/shape`.
"""

from __future__ import annotations

import argparse
import json

from clipdistill.errors import UserError
from clipdistill.world.build import write_extra_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("world")
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=500)
    args = ap.parse_args()
    try:
        print(json.dumps(write_extra_test(args.world, args.out, args.per_class)))
    except UserError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
