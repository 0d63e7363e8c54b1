"""Per-shape zero-shot recall of quality_longer.sh's students on the 4,000-image shape set, mean over seeds
(benchmarks/RESULTS.md, "The long tail of shapes"), beside how often training captions name
each shape and how much of that a kept-list keeps.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/per_class.py runs/q baseline cid_full cid cid_random

Scores the teacher (Q/rn/teacher) and every Q/rn_e10{,_seedS}/MODEL found into Q/per_class/ (each result is
written once: the eval records carry `per_class_recall`), then prints one markdown row per model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from balance_truth import main as truth
from clipdistill.world.scene import SHAPES


def _score(run: Path, out: Path, shapes: Path) -> dict[str, float]:
    if not out.is_file():
        subprocess.run([".venv/bin/clipdistill", "eval", "zeroshot", "--model", f"run:{run}", "--data", str(shapes),
                        "--name", "shape", "--output", str(out)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["metrics"]["per_class_recall"]


def main(q: Path, models: list[str]) -> None:
    shapes, dest = q / "extra_test" / "shape", q / "per_class"
    rows = {"teacher": [_score(q / "rn" / "teacher", dest / "rn_teacher.json", shapes)]}
    for model in models:
        runs = sorted(q.glob(f"rn_e10*/{model}"))
        rows[model] = [_score(r, dest / f"{r.parent.name}_{model}.json", shapes) for r in runs if
                       (r / "model.safetensors").is_file()]
    kept = truth(q / "world", q / "rn" / "balance")
    print("| | seeds | " + " | ".join(SHAPES) + " | mean |")
    print("| --- " * (len(SHAPES) + 3) + "|")
    print("| training pairs naming the shape | - | " + " | ".join(str(kept["pairs_naming_shape"][s]) for s in SHAPES)
          + " | - |")
    print("| share our `balance` keeps | - | " + " | ".join(f"{kept['pairs_naming_shape_kept'][s]:.2f}" for s in SHAPES)
          + " | - |")
    for model, recalls in rows.items():
        if recalls:
            mean = {s: 100 * sum(r[s] for r in recalls) / len(recalls) for s in SHAPES}
            print(f"| {model} | {len(recalls)} | " + " | ".join(f"{mean[s]:.1f}" for s in SHAPES)
                  + f" | {sum(mean.values()) / len(SHAPES):.2f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
