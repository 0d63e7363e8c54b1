"""How a `balance` kept-list compares with a world's planted near-duplicates (benchmarks/RESULTS.md).

    .venv/bin/python experiments/balance_truth.py runs/q/world runs/q/rn/balance
    .venv/bin/python experiments/balance_truth.py runs/q/world runs/q/rn/balance --controls

A world's pairs_groundtruth.json gives each pair's group (a scene and its jittered copies). Ideal
de-duplication keeps one pair per group; what a kept-list drops beyond that is unique content. The shares of
one-object and of 2-3-object scenes kept (counted from the captions) show which kind a list favours, and the
share kept of the pairs whose caption names each shape shows whether a list evens out the world's long tail of
shapes (drawn Zipf-weighted: "circle" about 5x as often as "ring"), as a semantic *balance* would.

`--controls` also writes two control kept-lists of the same size beside BALANCE (copies of it, so the
cluster labels and centres are the same; only kept_keys.txt differs): `BALANCE_oracle` keeps one pair
per planted group, then drops whole groups at random down to the size; `BALANCE_random` is a uniform
random sample of the pairs. Training on them (`quality_longer.sh`, MODELS cid_oracle / cid_random)
separates what de-duplication can gain on the world from what any smaller subset loses.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from clipdistill.world.scene import SHAPES


def _shapes(caption: str) -> set[str]:
    """Shapes a caption names ("... with N shapes" names none)."""
    return {w.strip(",") for w in caption.split()} & set(SHAPES)


def _objects(caption: str) -> int:
    """Objects in a world scene, from its caption: "... with N shapes" names the count; every other caption
    form names each object's shape, and a scene's shapes are distinct."""
    count = re.search(r"with (\d) shapes", caption)
    return int(count.group(1)) if count else len(_shapes(caption))


def _groups(world: Path) -> dict[int, list[str]]:
    truth = json.loads((world / "pairs_groundtruth.json").read_text())
    groups: dict[int, list[str]] = defaultdict(list)
    for key, row in sorted(truth.items()):
        groups[row["group"]].append(key)
    return groups


def main(world: Path, balance: Path) -> dict:
    groups = _groups(world)
    pairs = sum(len(g) for g in groups.values())
    kept = set((balance / "kept_keys.txt").read_text().split())
    singles = [g[0] for g in groups.values() if len(g) == 1]
    with open(world / "pairs.csv", newline="") as f:
        captions = {row["key"]: row["caption"] for row in csv.DictReader(f)}
    one_object = {key: _objects(c) == 1 for key, c in captions.items()}
    named = {s: [k for k, c in captions.items() if s in _shapes(c)] for s in SHAPES}
    ones = sum(one_object.values())
    one_groups = sum(one_object[g[0]] for g in groups.values())  # a group's pairs show one scene
    return {
        "pairs": pairs,
        "groups": len(groups),
        "one_per_group_fraction": round(len(groups) / pairs, 4),
        "kept_fraction": round(len(kept) / pairs, 4),
        "groups_with_a_kept_pair": round(sum(any(k in kept for k in g) for g in groups.values()) / len(groups), 4),
        "singletons_kept": round(sum(k in kept for k in singles) / len(singles), 4),
        "kept_pairs_beyond_one_per_group": sum(max(0, sum(k in kept for k in g) - 1) for g in groups.values()),
        "one_object_distinct_scene_share": round(one_groups / ones, 4),
        "multi_object_distinct_scene_share": round((len(groups) - one_groups) / (pairs - ones), 4),
        "one_object_pairs_kept": round(sum(one_object[k] for k in kept) / ones, 4),
        "multi_object_pairs_kept": round(sum(not one_object[k] for k in kept) / (pairs - ones), 4),
        "pairs_naming_shape": {s: len(keys) for s, keys in named.items()},
        "pairs_naming_shape_kept": {s: round(sum(k in kept for k in keys) / len(keys), 4) for s, keys in named.items()},
    }


def controls(world: Path, balance: Path, seed: int = 0) -> dict[str, Path]:
    groups = _groups(world)
    size = len((balance / "kept_keys.txt").read_text().split())
    rng = random.Random(seed)
    firsts = sorted(g[0] for g in groups.values())
    if size > len(firsts):
        raise SystemExit(f"{balance} keeps {size} pairs, more than the {len(firsts)} groups: no oracle of that size")
    every = sorted(k for g in groups.values() for k in g)
    lists = {"oracle": rng.sample(firsts, size), "random": rng.sample(every, size)}
    out = {}
    for name, keys in lists.items():
        dest = balance.with_name(f"{balance.name}_{name}")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(balance, dest)
        (dest / "kept_keys.txt").write_text("".join(f"{k}\n" for k in sorted(keys)))
        out[name] = dest
    return out


if __name__ == "__main__":
    world, balance = Path(sys.argv[1]), Path(sys.argv[2])
    print(json.dumps(main(world, balance), indent=1))
    if "--controls" in sys.argv[3:]:
        for name, path in controls(world, balance).items():
            print(f"wrote {name} control kept-list: {path}")
