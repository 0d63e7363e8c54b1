"""One result JSON per (model, dataset, task), and `eval build` (results -> one CSV).

Keys are CLIP_benchmark's (`dataset`, `model`, `pretrained`, `task`, `metrics`, `language`), so its
tooling reads our files, plus `provenance` (SPEC, weights hash, data fingerprint, templates, sample
counts, versions) and `efficiency` (parameters, encode throughput measured during the evaluation).
Unlike CLIP_benchmark we write `null` where it writes `NaN` (acc5 below 5 classes): strict JSON.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from clipdistill.errors import UserError
from clipdistill.manifest import atomic_write_text, versions
from clipdistill.zoo import ClipModel, parse_spec

TASKS = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe")
REQUIRED = ("dataset", "model", "pretrained", "task", "metrics")
DEFAULT_OUTPUT = "{dataset}_{model}_{pretrained}_{task}.json"
LEAD_COLUMNS = ["model_fullname", "model", "pretrained", "dataset", "task"]


def model_names(spec: str, arch: str) -> tuple[str, str]:
    """(model, pretrained) as CLIP_benchmark names them: architecture and weights source."""
    parsed = parse_spec(spec)
    if parsed.kind == "open_clip":
        return arch, parsed.checkpoint or "random-init"
    return arch, f"{parsed.kind}:{parsed.target}"


def make_record(model: ClipModel, *, dataset: str, task: str, metrics: dict[str, Any], data_fingerprint: str,
                samples: int, skipped: int, efficiency: dict[str, Any], **provenance: Any) -> dict[str, Any]:
    name, pretrained = model_names(model.spec, model.arch)
    return {
        "dataset": dataset, "model": name, "pretrained": pretrained, "task": task, "metrics": metrics,
        "language": "en",
        "provenance": {"spec": model.spec, "weights_hash": model.weights_hash(), "data_fingerprint": data_fingerprint,
                       "samples": samples, "skipped": skipped, **provenance,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()},
        "efficiency": {"params": model.num_params(), **efficiency},
    }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_") or "x"


def output_path(template: str, *, dataset: str, spec: str, task: str) -> Path:
    """Fill {dataset} {model} {pretrained} {task} (filename-safe) in an --output template.

    Needs only the SPEC (no model load), so --skip-existing can skip before loading anything.
    """
    name, pretrained = model_names(spec, Path(parse_spec(spec).target).stem)
    try:
        return Path(template.format(dataset=_slug(dataset), model=_slug(name), pretrained=_slug(pretrained),
                                    task=task))
    except (KeyError, IndexError) as e:
        raise UserError(f"--output {template!r}: unknown field {e}; use {{dataset}} {{model}} {{pretrained}} "
                        "{task}") from None


def write_result(record: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=False))
    return path


def is_result(data: object) -> bool:
    return isinstance(data, dict) and all(k in data for k in REQUIRED) and isinstance(data["metrics"], dict)


def read_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read a result JSON ({e})") from None
    if not is_result(data):
        raise UserError(f"{path}: not a result JSON (needs keys {', '.join(REQUIRED)})")
    return data


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders -> their *.json files (recursively), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.rglob("*.json")))
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    return out


def result_row(data: dict[str, Any]) -> dict[str, Any]:
    """One flat CSV row: metrics, the CLIP_benchmark keys, provenance and efficiency scalars."""
    row: dict[str, Any] = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    row.update({k: v for k, v in data["metrics"].items() if not isinstance(v, dict | list)})
    for section in ("provenance", "efficiency"):
        for k, v in data.get(section, {}).items():
            if isinstance(v, dict) and k == "params":
                row.update({f"params_{pk}": pv for pk, pv in v.items()})
            elif not isinstance(v, dict | list):
                row[k] = v
    row["model_fullname"] = f"{data['model']} {data['pretrained']}"
    return row


def gather_results(paths: list[str | Path]) -> tuple[list[dict[str, Any]], int]:
    """(result records, other JSONs skipped). A file named explicitly must be a result; in folders,
    other JSON files (manifests, configs) are skipped and counted."""
    explicit = {Path(p) for p in paths if Path(p).is_file()}
    records, skipped = [], 0
    for p in expand_paths(paths):
        if p in explicit:
            records.append(read_result(p))
            continue
        try:
            data = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if is_result(data):
            records.append(data)
        else:
            skipped += 1
    return records, skipped


def build_csv(paths: list[str | Path], out: str | Path) -> tuple[int, int]:
    """Gather result JSONs (files or folders) into one CSV; returns (rows, skipped non-result JSONs)."""
    records, skipped = gather_results(paths)
    rows = [result_row(r) for r in records]
    if not rows:
        raise UserError("no result JSONs found in " + ", ".join(map(str, paths)))
    fields = LEAD_COLUMNS + sorted({k for r in rows for k in r} - set(LEAD_COLUMNS))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows), skipped
