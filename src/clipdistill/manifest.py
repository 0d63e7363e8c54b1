"""`manifest.json` for every stage folder: what made it, so later stages can refuse foreign inputs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipdistill.errors import ManifestMismatch, UserError

MANIFEST = "manifest.json"
RUN_MARKER = ".clipdistill-run.json"  # written by clipdistill.runfolder when a command claims its folder


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict[str, str]:
    import torch

    import clipdistill

    out = {"clipdistill": clipdistill.__version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import open_clip

        out["open_clip"] = open_clip.__version__
    except Exception:  # open_clip is a dependency, but a manifest must never fail on it
        pass
    return out


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary name in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed write or rename (the target is a folder) leaves no temp file behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_manifest(folder: str | Path, stage: str, **fields: Any) -> dict[str, Any]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run_id = _marker_run_id(folder)  # the run that wrote the folder, so a manifest names its run
    data = {"stage": stage, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions(),
            **({"run_id": run_id} if run_id else {}), **fields}
    atomic_write_text(folder / MANIFEST, json.dumps(data, indent=2, sort_keys=False, default=str))
    return data


def _marker_run_id(folder: Path) -> str | None:
    try:
        run_id = json.loads((folder / RUN_MARKER).read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None  # no marker (the folder was not claimed, e.g. a library call): the manifest names no run
    return run_id if isinstance(run_id, str) else None


def read_manifest(folder: str | Path, stage: str | None = None) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} has no {MANIFEST}: it was not written by a clipdistill stage (or is incomplete)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: corrupt manifest ({e})") from None
    if stage is not None and data.get("stage") != stage:
        raise ManifestMismatch(f"{folder} was made by stage {data.get('stage')!r}, expected {stage!r}")
    return data


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_manifest(data: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Raise ManifestMismatch naming every field (dotted path) whose value differs from `expected`."""
    diffs = [
        f"  {key}: manifest has {_get(data, key)!r}, this run uses {want!r}"
        for key, want in expected.items()
        if _get(data, key) != want
    ]
    if diffs:
        raise ManifestMismatch(f"{where} was made from other inputs than this run:\n" + "\n".join(diffs))


def read_checked(folder: str | Path, stage: str, what: str, *, teacher: str | None = None,
                 fingerprint: str | None = None,
                 same_teacher: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """A stage's manifest, checked against the teacher spec and source fingerprint the caller was told to
    use (the feature store and the balance output are both keyed on these two). `same_teacher(recorded, given)`:
    whether two SPEC spellings name one model (the zoo's `same_model_spec`); default: equal strings."""
    data = read_manifest(folder, stage)
    expected = {}
    recorded = _get(data, "teacher.spec")
    if teacher is not None and not (same_teacher and isinstance(recorded, str) and same_teacher(recorded, teacher)):
        expected["teacher.spec"] = teacher
    if fingerprint is not None:
        expected["source.fingerprint"] = fingerprint
    check_manifest(data, expected, f"{what} {folder}")
    return data
