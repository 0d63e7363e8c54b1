"""Sort the report's inputs: eval result JSONs, run folders (metrics.jsonl), balance reports and
CLIP-TD protocol rows. A path named explicitly must be one of these; inside folders, other JSON files
(manifests, configs, per-cell files) are skipped and counted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipdistill.errors import UserError
from clipdistill.evaluation.results import is_result

LOWSHOT_KEYS = {"task", "fraction", "method", "metric", "value"}
BALANCE_KEYS = {"hist_before", "hist_after"}
TD_SAMPLE_KEYS = {"grid", "selection", "samples"}


@dataclass
class ReportInputs:
    results: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run name -> metrics.jsonl rows
    balance: dict[str, dict[str, Any]] = field(default_factory=dict)  # file stem -> balance report
    lowshot: list[dict[str, Any]] = field(default_factory=list)  # protocol rows
    balance_dirs: dict[str, Path] = field(default_factory=dict)  # balance DIR name -> DIR (for the gallery)
    td_samples: list[Path] = field(default_factory=list)  # td_samples.json files of CLIP-TD fine-tunes
    skipped: int = 0


def _is_lowshot(data: object) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(r, dict) and LOWSHOT_KEYS <= r.keys()
                                                         for r in data)


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of {"step": int, "<term>": number, ...}; malformed lines are a clear error."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or "step" not in row:
            raise UserError(f"{path}:{n}: a metrics line needs a 'step'")
        rows.append(row)
    return rows


def _add_json(inputs: ReportInputs, path: Path, explicit: bool) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if explicit:
            raise UserError(f"{path}: cannot read JSON ({e})") from None
        inputs.skipped += 1
        return
    if is_result(data):
        inputs.results.append(data)
    elif _is_lowshot(data):
        inputs.lowshot.extend(data)
    elif isinstance(data, dict) and BALANCE_KEYS <= data.keys():
        # a balance DIR's report.json is named by its folder: several DIRs must not overwrite one another
        name = path.parent.name if path.stem == "report" else path.stem
        inputs.balance[name] = data
        if (path.parent / "kept.npy").is_file() and (path.parent / "manifest.json").is_file():
            inputs.balance_dirs[name] = path.parent
    elif isinstance(data, dict) and TD_SAMPLE_KEYS <= data.keys():
        inputs.td_samples.append(path)
    elif explicit:
        raise UserError(f"{path}: not an eval result, a balance report (hist_before/hist_after) or CLIP-TD "
                        "protocol rows (task, regime, fraction, method, seed, metric, value)")
    else:
        inputs.skipped += 1


def collect(paths: list[str | Path]) -> ReportInputs:
    inputs = ReportInputs()
    for p in map(Path, paths):
        if p.is_file() and p.name.endswith(".jsonl"):
            inputs.curves[p.resolve().parent.name] = read_metrics_jsonl(p)
        elif p.is_file():
            _add_json(inputs, p, explicit=True)
        elif p.is_dir():
            if (p / "metrics.jsonl").is_file():
                inputs.curves[p.resolve().name] = read_metrics_jsonl(p / "metrics.jsonl")
            for f in sorted(p.rglob("*.json")):
                _add_json(inputs, f, explicit=False)
        else:
            raise UserError(f"{p}: no such file or folder")
    if not (inputs.results or inputs.curves or inputs.balance or inputs.lowshot):
        raise UserError("nothing to report: no eval results, run metrics, balance reports or protocol rows in "
                        + ", ".join(map(str, paths)))
    return inputs
