"""Scores of quality_longer.sh's students over every seed trained, as markdown (benchmarks/RESULTS.md).

    .venv/bin/python experiments/seeds_table.py runs/q                      # 10-epoch runs, every model found
    .venv/bin/python experiments/seeds_table.py runs/q --compare cid_steps:cid_full --compare cid:cid_full

Reads Q/rn/eval* (the teacher) and Q/rn_eE{,_seedS}/eval* (students; E from --epochs): zero-shot on the
world's test splits, on the shape *train* split (dev) and on extra_test.py's larger sets, and the shape linear
probe. Per model: the mean over seeds and the seed range; the share of the teacher-baseline gap closed uses the
baseline's mean over its seeds. `--compare A:B` prints A - B seed by seed (only seeds both have) and the mean.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

# column -> (eval folder, file suffix, metric)
COLUMNS = {
    "shape": ("eval", "shape-zeroshot", "acc1"),
    "colour": ("eval", "color-zeroshot", "acc1"),
    "probe": ("eval", "shape-linear_probe", "lp_acc1"),
    "dev": ("eval_dev", "shape_train-zeroshot", "acc1"),
    "shape 4k": ("eval_extra", "shape-zeroshot", "acc1"),
    "colour 5k": ("eval_extra", "color-zeroshot", "acc1"),
    "probe 4k": ("eval_extra", "shape-linear_probe", "lp_acc1"),
}
GAP = ("shape", "dev", "shape 4k", "probe 4k")  # columns whose gap-closed share is printed


def _scores(run_dir: Path, model: str) -> dict[str, float]:
    out = {}
    for col, (folder, suffix, metric) in COLUMNS.items():
        path = run_dir / folder / f"{model}-{suffix}.json"
        if path.is_file():
            out[col] = 100 * json.loads(path.read_text())["metrics"][metric]
    return out


def collect(q: Path, epochs: int) -> tuple[dict[str, float], dict[str, dict[int, dict[str, float]]]]:
    teacher = _scores(q / "rn", "teacher")
    students: dict[str, dict[int, dict[str, float]]] = {}
    for run_dir in sorted(q.glob(f"rn_e{epochs}*")):
        m = re.fullmatch(rf"rn_e{epochs}(?:_seed(\d+))?", run_dir.name)
        if not m:
            continue
        seed = int(m.group(1) or 0)
        for path in sorted((run_dir / "eval_dev").glob("*-shape_train-zeroshot.json")):
            model = path.name.removesuffix("-shape_train-zeroshot.json")
            students.setdefault(model, {})[seed] = _scores(run_dir, model)
    return teacher, students


def _vals(rows: list[dict[str, float]], col: str) -> list[float]:
    return [r[col] for r in rows if col in r]  # a run not yet scored on a set has no value there


def _mean(rows: list[dict[str, float]], col: str) -> float | None:
    vals = _vals(rows, col)
    return statistics.fmean(vals) if vals else None


def table(teacher: dict[str, float], students: dict[str, dict[int, dict[str, float]]]) -> str:
    cols = list(COLUMNS)
    head = ["model", "seeds", *cols, *(f"gap closed, {c}" for c in GAP)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines.append("| teacher | - | " + " | ".join(f"{teacher[c]:.2f}" if c in teacher else "-" for c in cols)
                 + " |" + " - |" * len(GAP))
    base = list(students.get("baseline", {}).values())
    for model, by_seed in students.items():
        rows = list(by_seed.values())
        cells = []
        for c in cols:
            vals = _vals(rows, c)
            cells.append("-" if not vals else f"{statistics.fmean(vals):.2f}" if len(vals) == 1
                         else f"{statistics.fmean(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})")
        for c in GAP:
            t, b, s = teacher.get(c), _mean(base, c), _mean(rows, c)
            shown = model != "baseline" and None not in (t, b, s) and t != b
            cells.append(f"{100 * (s - b) / (t - b):.0f}%" if shown else "-")
        lines.append(f"| {model} | {','.join(map(str, sorted(by_seed)))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(students: dict[str, dict[int, dict[str, float]]], a: str, b: str) -> str:
    seeds = sorted(set(students.get(a, {})) & set(students.get(b, {})))
    if not seeds:
        return f"{a} - {b}: no seed has both"
    cols = [c for c in COLUMNS if all(c in students[a][s] and c in students[b][s] for s in seeds)]
    lines = [f"| {a} - {b} | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    diffs = {c: [students[a][s][c] - students[b][s][c] for s in seeds] for c in cols}
    for i, s in enumerate(seeds):
        lines.append(f"| seed {s} | " + " | ".join(f"{diffs[c][i]:+.2f}" for c in cols) + " |")
    lines.append(f"| mean of {len(seeds)} | " + " | ".join(f"{statistics.fmean(diffs[c]):+.2f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("q", type=Path)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--compare", action="append", default=[], metavar="A:B")
    args = ap.parse_args()
    teacher, students = collect(args.q, args.epochs)
    if not students:
        raise SystemExit(f"error: no scored runs under {args.q}/rn_e{args.epochs}*")
    print(table(teacher, students))
    for pair in args.compare:
        a, _, b = pair.partition(":")
        print("\n" + compare(students, a, b))


if __name__ == "__main__":
    main()
