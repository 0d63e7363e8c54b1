"""`clipdistill protocol`: every task x regime x method x seed as one resumable cell, then a results table.

Regimes: low-shot fractions x seeds (nested, stratified subsets of the train split), full data, and
domain-shift splits (`shift_splits`, evaluated with each trained model: regime `shift:<split>`, with the
fraction of the model; regime `train_dev` when a task carves a dev set from train with `dev_fraction`:
choose options on it, report val). Methods: answer prior, baseline fine-tune, naive distillation, CLIP-TD.
Task data is read by the real readers (`clipdistill.data.tasks`); `world` roots relative task folders.
A cell is finished once `cells/<task>/f<fraction>-s<seed>/<method>/result.json` exists; reruns skip it,
unless its recorded config (all but `out` / `world`, the locations) or the hash of the task's annotation
files differs, which is refused (naming the field).
Outputs: `rows.json` (rows {task, kind, regime, fraction, method, seed, metric, value} for `report`),
`results.json` + `results.md` (mean +- std over seeds, absolute and relative gain over the baseline),
`summary.json` (CLIP-TD minus baseline, in points of each task's main metric).
`keep_checkpoints: false` deletes a cell's training checkpoints once its result is written (the task model,
metrics and result stay): a protocol otherwise keeps every cell's optimizer state (tens of GB for a full
sweep on the `default` world).
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, field_validator
from pydantic_core import to_jsonable_python

from clipdistill.config import StrictModel
from clipdistill.errors import ManifestMismatch
from clipdistill.manifest import atomic_write_text
from clipdistill.progress import StageProgress
from clipdistill.td.data import TaskConfig, TaskReader
from clipdistill.td.runner import FinetuneConfig, Trainer, run_finetune
from clipdistill.td.student import StudentConfig, check_student
from clipdistill.td.task import TDConfig
from clipdistill.td.tasks import task_kind
from clipdistill.train.checkpoint import CKPT_DIR
from clipdistill.train.config import TrainConfig

Method = Literal["baseline", "naive", "clip_td", "prior"]
LOCATION_FIELDS = {"out", "world"}  # where things are, not what runs: moving the world keeps finished cells


class ProtocolConfig(StrictModel):
    tasks: list[TaskConfig]
    world: str | None = None  # embedded world (or any root): relative task folders are resolved under it
    fractions: list[float] = [0.01, 0.05, 0.1, 0.25]
    seeds: list[int] = [0, 1, 2]
    full: bool = True
    methods: list[Method] = ["baseline", "naive", "clip_td"]
    student: StudentConfig = StudentConfig()
    teacher: str
    td: TDConfig = TDConfig()  # the CLIP-TD settings; naive / baseline derive from it
    batch_size: int = 16
    eval_batch_size: int = 32
    train: TrainConfig = TrainConfig()  # every cell's loop settings; train.seed defaults to each cell's seed
    out: str = "runs/protocol"
    keep_checkpoints: bool = True  # false: a finished cell's checkpoints/ go (not part of a cell's identity)

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique (they name the cell folders), got {names}")
        return tasks


def cell_configs(cfg: ProtocolConfig) -> list[tuple[str, FinetuneConfig]]:
    """(cell path relative to out, its FinetuneConfig) for every cell, in run order."""
    cells = []
    fractions = [*cfg.fractions, *([1.0] if cfg.full and 1.0 not in cfg.fractions else [])]
    for task in cfg.tasks:
        for fraction in fractions:
            for seed in cfg.seeds:
                for method in cfg.methods:
                    ft = FinetuneConfig(task=task, world=cfg.world, student=cfg.student, teacher=cfg.teacher,
                                        td=cfg.td.model_copy(update={"method": method}), batch_size=cfg.batch_size,
                                        eval_batch_size=cfg.eval_batch_size, fraction=fraction, seed=seed,
                                        train=cfg.train)
                    cells.append((f"cells/{task.name}/f{fraction:g}-s{seed}/{method}", ft))
    return cells


def _identity(config: dict, distils: bool) -> dict:
    """What a finished cell's result depends on. A cell that never loads the teacher (prior, baseline) stays
    valid under another teacher or teacher feature store, so comparing teachers reuses those cells."""
    if distils:
        return config
    task = {k: v for k, v in config.get("task", {}).items() if k != "teacher_features"}
    return {**{k: v for k, v in config.items() if k != "teacher"}, "task": task}


def _with_new_defaults(recorded: dict, model: type[BaseModel] = FinetuneConfig) -> dict:
    """A finished cell's config with the options added since it ran filled in at their defaults (which is how
    it ran), nested sections too; keys that are no longer options stay, so the comparison names them."""
    out = dict(recorded)
    if model is FinetuneConfig and isinstance(out.get("train"), dict) and "seed" not in out["train"]:
        out["train"] = {**out["train"], "seed": out.get("seed", 0)}  # the loop always ran with the cell's seed
    for name, field in model.model_fields.items():
        sub = field.annotation
        if name not in out and not field.is_required():
            out[name] = to_jsonable_python(field.get_default(call_default_factory=True))
        elif isinstance(out.get(name), dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            out[name] = _with_new_defaults(out[name], sub)
    return {k: v for k, v in out.items() if model is not FinetuneConfig or k not in LOCATION_FIELDS}


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
    reader = TaskReader(progress)
    # every split of every task opened (and hashed) up front: a bad folder or split name fails before training
    data_sha = {t.name: reader.data_sha256(t, cfg.world) for t in cfg.tasks}
    check_student(cfg.student)  # and a bad hf: student folder
    rows: list[dict[str, Any]] = []
    cells = list(cell_configs(cfg))
    # plain lines even on a terminal: each cell's training draws its own bar, and rich allows one at a time
    bar = StageProgress("protocol", len(cells), unit="cells", tty=False)
    for rel, ft in cells:
        cell = out / rel
        result_path = cell / "result.json"
        current = ft.model_dump(mode="json", exclude=LOCATION_FIELDS)
        if result_path.is_file():
            done = json.loads(result_path.read_text())
            recorded = _with_new_defaults(done["config"])
            _check_same(_identity(recorded, ft.td.distils), _identity(current, ft.td.distils), str(cell))
            if done.get("data_sha256") != data_sha[ft.task.name]:
                raise ManifestMismatch(f"{cell} was run on other {ft.task.name} data (annotation files differ); "
                                       "use another `out` folder or delete that cell")
            progress(f"skip (done) {rel}")
        else:
            progress(f"run {rel}")
            metrics = run_finetune(ft, cell, trainer=trainer, train_config=train_config, reader=reader, log=progress)
            done = {"config": current, "data_sha256": data_sha[ft.task.name], "metrics": metrics}
            atomic_write_text(result_path, json.dumps(done, indent=2))
        if not cfg.keep_checkpoints:  # only after result.json: a cell killed before it still resumes
            shutil.rmtree(cell / CKPT_DIR, ignore_errors=True)
        rows += cell_rows(ft, done["metrics"])
        bar.advance()
    bar.close()
    atomic_write_text(out / "rows.json", json.dumps(rows, indent=2))
    table = summarise(rows)
    atomic_write_text(out / "results.json", json.dumps(table, indent=2))
    atomic_write_text(out / "results.md", to_markdown(table))
    summary = {"gain_points": gain_points(table, {t.name: t.kind for t in cfg.tasks}),
               "table": str(out / "results.md")}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return {"rows": rows, "table": table, "summary": summary}


def cell_rows(ft: FinetuneConfig, metrics: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for split, values in metrics.items():
        if split == "val":
            regime = "full" if ft.fraction >= 1.0 else "low_shot"
        else:
            regime = split  # shift:NAME, from the model of this fraction (the row's `fraction`)
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


def gain_points(table: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, float]:
    """{"<task> <regime> f<fraction>": CLIP-TD mean - baseline mean} on each task's main metric (in points:
    the metrics are percentages); empty unless both methods ran."""
    return {f"{e['task']} {e['regime']} f{e['fraction']:g}": round(e["gain_abs"], 4) for e in table
            if e["method"] == "clip_td" and "gain_abs" in e and e["metric"] == task_kind(kinds[e["task"]]).main_metric}


def to_markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| task | regime | fraction | metric | method | mean +- std | seeds | gain (abs) | gain (rel %) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in table:
        rel = e.get("gain_rel_pct")
        lines.append(f"| {e['task']} | {e['regime']} | {e['fraction']:g} | {e['metric']} | {e['method']} | "
                     f"{e['mean']:.2f} +- {e['std']:.2f} | {e['n_seeds']} | {e.get('gain_abs', 0.0):+.2f} | "
                     f"{'n/a' if rel is None else f'{rel:+.1f}'} |")
    return "\n".join(lines) + "\n"
