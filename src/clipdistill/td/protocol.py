"""`clipdistill protocol`: every task x regime x method x seed as one resumable cell, then a results table.

Regimes: low-shot fractions x seeds (nested subsets), full data, and domain-shift test sets (evaluated
with the full-data model of the same seed). Methods: baseline fine-tune, naive distillation, CLIP-TD.
A cell is finished once `cells/<task>/f<fraction>-s<seed>/<method>/result.json` exists; reruns skip it,
unless its recorded config differs from the current one, which is refused (naming the field).
Outputs: `rows.json` (rows {task, regime, fraction, method, seed, metric, value} for `report`),
`results.json` + `results.md` (mean +- std over seeds, absolute and relative gain over the baseline).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from clipdistill.config import StrictModel
from clipdistill.errors import ManifestMismatch
from clipdistill.manifest import atomic_write_text
from clipdistill.td.runner import FinetuneConfig, TaskData, Trainer, run_finetune
from clipdistill.td.student import StudentConfig
from clipdistill.td.task import TDConfig

Method = Literal["baseline", "naive", "clip_td"]


class ProtocolConfig(StrictModel):
    tasks: list[TaskData]
    fractions: list[float] = [0.01, 0.05, 0.1, 0.25]
    seeds: list[int] = [0, 1, 2]
    full: bool = True
    methods: list[Method] = ["baseline", "naive", "clip_td"]
    student: StudentConfig = StudentConfig()
    teacher: str
    td: TDConfig = TDConfig()  # the CLIP-TD settings; naive / baseline derive from it
    batch_size: int = 16
    eval_batch_size: int = 32
    train: dict[str, Any] = {}
    out: str = "runs/protocol"


def cell_configs(cfg: ProtocolConfig) -> list[tuple[str, FinetuneConfig]]:
    """(cell path relative to out, its FinetuneConfig) for every cell, in run order."""
    cells = []
    fractions = [*cfg.fractions, *([1.0] if cfg.full and 1.0 not in cfg.fractions else [])]
    for task in cfg.tasks:
        for fraction in fractions:
            for seed in cfg.seeds:
                for method in cfg.methods:
                    ft = FinetuneConfig(task=task, student=cfg.student, teacher=cfg.teacher,
                                        td=cfg.td.model_copy(update={"method": method}), batch_size=cfg.batch_size,
                                        eval_batch_size=cfg.eval_batch_size, fraction=fraction, seed=seed,
                                        train=cfg.train)
                    cells.append((f"cells/{task.name}/f{fraction:g}-s{seed}/{method}", ft))
    return cells


def _check_same(recorded: dict, current: dict, where: str, prefix: str = "") -> None:
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            _check_same(a, b, where, f"{prefix}{key}.")
        elif a != b:
            raise ManifestMismatch(f"{where} was run with {prefix}{key}={a!r}, the config now says {b!r}; "
                                   "use another `out` folder or delete that cell")


def run_protocol(cfg: ProtocolConfig, trainer: Trainer | None = None, train_config: Any = None,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    out = Path(cfg.out)
    rows: list[dict[str, Any]] = []
    for rel, ft in cell_configs(cfg):
        cell = out / rel
        result_path = cell / "result.json"
        current = ft.model_dump(mode="json", exclude={"out"})
        if result_path.is_file():
            done = json.loads(result_path.read_text())
            _check_same(done["config"], current, str(cell))
            progress(f"skip (done) {rel}")
        else:
            progress(f"run {rel}")
            metrics = run_finetune(ft, cell, trainer=trainer, train_config=train_config)
            done = {"config": current, "metrics": metrics}
            atomic_write_text(result_path, json.dumps(done, indent=2))
        rows += cell_rows(ft, done["metrics"])
    atomic_write_text(out / "rows.json", json.dumps(rows, indent=2))
    table = summarise(rows)
    atomic_write_text(out / "results.json", json.dumps(table, indent=2))
    atomic_write_text(out / "results.md", to_markdown(table))
    return {"rows": rows, "table": table}


def cell_rows(ft: FinetuneConfig, metrics: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for split, values in metrics.items():
        if split == "val":
            regime = "full" if ft.fraction >= 1.0 else "low_shot"
        elif ft.fraction >= 1.0:
            regime = split  # shift:NAME, from the full-data model
        else:
            continue  # shifted sets are reported for the full-data regime only
        for metric, value in values.items():
            if metric != "n":
                rows.append({"task": ft.task.name, "kind": ft.task.kind, "regime": regime, "fraction": ft.fraction,
                             "method": ft.td.method, "seed": ft.seed, "metric": metric, "value": value})
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- std over seeds per (task, regime, fraction, metric, method), with gains over the baseline."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["regime"], r["fraction"], r["metric"], r["method"])].append(r["value"])
    table = []
    for (task, regime, fraction, metric, method), vals in sorted(groups.items()):
        base = groups.get((task, regime, fraction, metric, "baseline"))
        mean = statistics.fmean(vals)
        entry = {"task": task, "regime": regime, "fraction": fraction, "metric": metric, "method": method,
                 "mean": mean, "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n_seeds": len(vals)}
        if base:
            b = statistics.fmean(base)
            entry["gain_abs"] = mean - b
            entry["gain_rel_pct"] = 100 * (mean - b) / b if b else None
        table.append(entry)
    return table


def to_markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| task | regime | fraction | metric | method | mean +- std | seeds | gain (abs) | gain (rel %) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in table:
        rel = e.get("gain_rel_pct")
        lines.append(f"| {e['task']} | {e['regime']} | {e['fraction']:g} | {e['metric']} | {e['method']} | "
                     f"{e['mean']:.2f} +- {e['std']:.2f} | {e['n_seeds']} | {e.get('gain_abs', 0.0):+.2f} | "
                     f"{'n/a' if rel is None else f'{rel:+.1f}'} |")
    return "\n".join(lines) + "\n"
