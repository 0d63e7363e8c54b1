"""How a `balance` kept-list compares with a world's planted near-duplicates (benchmarks/RESULTS.md).

    .venv/bin/python benchmarks/balance_truth.py runs/q/world runs/q/rn/balance

A world's pairs_groundtruth.json gives each pair's group (a scene and its jittered copies). Ideal
de-duplication keeps one pair per group; what a kept-list drops beyond that is unique content.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def main(world: Path, balance: Path) -> dict:
    truth = json.loads((world / "pairs_groundtruth.json").read_text())
    kept = set((balance / "kept_keys.txt").read_text().split())
    groups: dict[int, list[str]] = defaultdict(list)
    for key, row in truth.items():
        groups[row["group"]].append(key)
    singles = [g[0] for g in groups.values() if len(g) == 1]
    return {
        "pairs": len(truth),
        "groups": len(groups),
        "one_per_group_fraction": round(len(groups) / len(truth), 4),
        "kept_fraction": round(len(kept) / len(truth), 4),
        "groups_with_a_kept_pair": round(sum(any(k in kept for k in g) for g in groups.values()) / len(groups), 4),
        "singletons_kept": round(sum(k in kept for k in singles) / len(singles), 4),
        "kept_pairs_beyond_one_per_group": sum(max(0, sum(k in kept for k in g) - 1) for g in groups.values()),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
