"""The teacher-versus-students table: one row per model, one column per (task, dataset) headline metric.

Gap closed (per metric) = (student - baseline) / (teacher - baseline): 0 % = no better than the
baseline (a student of the same size trained without distillation), 100 % = as good as the teacher.
The row's value is the mean over the metric columns where the teacher leads the baseline by at least
`MIN_GAP` (1 point): over a smaller or negative gap the ratio is noise (a 0.6-point gap turned a 1-point
difference into "178 %"), so those columns are left out and the cell is empty when none is left.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

# task -> [(metric key, short column label)]; retrieval falls back to the smallest k it has
HEADLINE = {
    "zeroshot_classification": [("acc1", "zero-shot top-1")],
    "linear_probe": [("lp_acc1", "linear probe top-1")],
}
MIN_GAP = 0.01
RETRIEVAL = [("text_retrieval_recall", "I->T R@{k}"), ("image_retrieval_recall", "T->I R@{k}")]


def model_label(record: dict[str, Any]) -> str:
    return record.get("provenance", {}).get("spec") or f"{record['model']} {record['pretrained']}"


def _headline(record: dict[str, Any]) -> list[tuple[str, float]]:
    m, task, ds = record["metrics"], record["task"], record["dataset"]
    if task == "zeroshot_retrieval":
        ks = sorted(int(k.split("@")[1]) for k in m if k.startswith("text_retrieval_recall@"))
        if not ks:
            return []
        return [(f"{ds}: {label.format(k=ks[0])}", m[f"{key}@{ks[0]}"]) for key, label in RETRIEVAL]
    return [(f"{ds}: {label}", m[key]) for key, label in HEADLINE.get(task, []) if m.get(key) is not None]


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]  # {"model", "role", "params_m", "image_per_s", "text_per_s", <metric cols>, "gap"}


def comparison_table(results: list[dict[str, Any]], teacher: str | None = None,
                     baseline: str | None = None) -> Table:
    by_model: dict[str, dict[str, Any]] = {}
    columns: list[str] = []
    for rec in results:
        label = model_label(rec)
        row = by_model.setdefault(label, {"model": label, "params_m": None, "image_per_s": None, "text_per_s": None})
        eff = rec.get("efficiency", {})
        if eff.get("params"):
            row["params_m"] = eff["params"]["total"] / 1e6
        # encode throughput from zero-shot when there is one (its batches are the eval's batches)
        if rec["task"] == "zeroshot_classification" or row["image_per_s"] is None:
            row["image_per_s"] = eff.get("image_encode_per_s", row["image_per_s"])
            row["text_per_s"] = eff.get("text_encode_per_s", row["text_per_s"])
        for col, value in _headline(rec):
            row[col] = value
            if col not in columns:
                columns.append(col)
    for role, label in (("teacher", teacher), ("baseline", baseline)):
        if label is not None and label not in by_model:
            raise KeyError(f"--{role} {label!r} is not among the evaluated models: {', '.join(by_model)}")
    rows = list(by_model.values())
    for row in rows:
        row["role"] = "teacher" if row["model"] == teacher else "baseline" if row["model"] == baseline else "student"
        row["gap"] = _gap_closed(row, by_model.get(teacher or ""), by_model.get(baseline or ""), columns)
    rows.sort(key=lambda r: ({"teacher": 0, "baseline": 1}.get(r["role"], 2), r["model"]))
    return Table(columns, rows)


SEED = re.compile(r"[/_\-.:]seed[_\-=]?\d+(?=$|[/_\-.@])", re.IGNORECASE)


def seed_groups(t: Table) -> list[dict[str, Any]]:
    """Rows of one model trained with several seeds, together: [{"model", "role", "n", "values": {column:
    [value per seed]}}]. Seeds are told apart by a `seed<N>` part of the SPEC (run:runs/cid-seed1,
    run:runs/seed1/cid); other names are one model each. Order: teacher, baseline, students."""
    groups: dict[str, dict[str, Any]] = {}
    for row in t.rows:
        name = SEED.sub("", row["model"])
        g = groups.setdefault(name, {"model": name, "role": "student", "n": 0, "values": {c: [] for c in t.columns}})
        g["n"] += 1
        if row["role"] != "student":
            g["role"] = row["role"]
        for c in t.columns:
            if row.get(c) is not None:
                g["values"][c].append(row[c])
    return sorted(groups.values(), key=lambda g: ({"teacher": 0, "baseline": 1}.get(g["role"], 2), g["model"]))


def _gap_closed(row: dict, t: dict | None, b: dict | None, columns: list[str]) -> float | None:
    if t is None or b is None or row["role"] != "student":
        return None
    gaps = [(row[c] - b[c]) / (t[c] - b[c]) for c in columns
            if all(c in r for r in (row, t, b)) and t[c] - b[c] >= MIN_GAP]
    return statistics.fmean(gaps) if gaps else None
