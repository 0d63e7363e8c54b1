"""Task data of a CLIP-TD run: the `task:` config section, its splits read through the real task readers
(`clipdistill.data.tasks.open_task`: VQA v2 / SNLI-VE / VCR formats, the embedded world's files) and the
low-shot training subset (`clipdistill.splits`: a `clipdistill splits` lowshot.json, or made on the fly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from clipdistill.config import StrictModel
from clipdistill.data.tasks import TaskData
from clipdistill.errors import UserError
from clipdistill.manifest import sha256_json
from clipdistill.splits import load_split, low_shot, select, stratified_order, subset_size
from clipdistill.td.examples import TaskExample
from clipdistill.td.tasks import TASK_KINDS, task_kind

DEV_SEED = 7919  # one fixed dev draw for every cell: a cell's seed varies its low-shot subset, never the dev set


class TaskConfig(StrictModel):
    name: str
    kind: str  # a registered task kind (td/tasks/): vqa | snli_ve | vcr
    folder: str  # the task folder (world: tasks/<kind>); a relative one is resolved under `world` when set
    train_split: str = "train"
    val_split: str | None = None  # default per kind: vqa / vcr "val", snli_ve "dev"
    shift_splits: list[str] = []  # domain-shifted test splits, evaluated with the same trained model
    images: str | None = None  # image folder, if not the task folder's own (COCO / Flickr30k elsewhere)
    splits: str | None = None  # folder from `clipdistill splits`: its lowshot.json gives the low-shot subsets
    max_answers: int = 3129  # VQA answer vocabulary size (the usual VQA v2 choice)
    # feature store of this task's images (`embed --tokens --data images:IMAGE_DIR` with the run's teacher):
    # CLIP-TD reads the teacher's image features from it instead of running the image tower (td/cached.py)
    teacher_features: str | None = None
    # share of the train split held out as a dev set (stratified like the low-shot subsets, one fixed draw):
    # every model trains on the rest and is also scored on it (result "train_dev", so it is never confused with
    # a dataset's own dev split such as SNLI-VE's); options are chosen there while val stays the reported split
    dev_fraction: float = Field(0.0, ge=0, lt=1)

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        if kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {kind!r}; choose one of {', '.join(TASK_KINDS)}")
        return kind

    @model_validator(mode="after")
    def _dev_needs_on_the_fly_subsets(self) -> TaskConfig:
        if self.dev_fraction and self.splits:
            raise ValueError("dev_fraction carves the dev set before drawing low-shot subsets; a `splits` folder's "
                             "lowshot.json was drawn from the whole train split: use one or the other")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_val_split(cls, data: Any) -> Any:
        # filled before validation (not in an after-validator) so the recorded config names the split used
        kind = data.get("kind") if isinstance(data, dict) else None
        if isinstance(kind, str) and data.get("val_split") is None and kind in TASK_KINDS:
            data = {**data, "val_split": TASK_KINDS[kind].default_val_split}
        return data

    def eval_splits(self) -> dict[str, str]:
        """{result name: split}: "val" and "shift:<split>" for each shift split."""
        return {"val": str(self.val_split), **{f"shift:{s}": s for s in self.shift_splits}}


def task_folder(task: TaskConfig, world: str | None) -> Path:
    folder = Path(task.folder)
    return folder if world is None or folder.is_absolute() else Path(world) / folder


class TaskReader:
    """Opens task splits once per process (a protocol runs many cells on the same files) and reports
    records the readers skipped, by reason."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self._cache: dict[tuple, TaskData] = {}

    def open(self, task: TaskConfig, world: str | None, split: str) -> TaskData:
        folder = task_folder(task, world)
        key = (task.kind, str(folder.resolve()), split, task.images)
        if key not in self._cache:
            data = task_kind(task.kind).read(folder, split, task.images)
            if data.skips.total:
                reasons = ", ".join(f"{r}: {n}" for r, n in sorted(data.skips.items()))
                self.log(f"{task.name} {split}: {len(data.examples)} examples, skipped {data.skips.total} "
                         f"records ({reasons})")
            self._cache[key] = data
        return self._cache[key]

    def data_sha256(self, task: TaskConfig, world: str | None) -> str:
        """One hash over the annotations of every split a run reads (train, val, shift)."""
        splits = [task.train_split, *task.eval_splits().values()]
        return sha256_json({s: self.open(task, world, s).source_sha256() for s in splits})


def split_dev(task: TaskConfig, data: TaskData) -> tuple[TaskData, TaskData | None]:
    """(training pool, dev set) of the train split: dev is `task.dev_fraction` of it (None when 0), drawn
    stratified with DEV_SEED; the pool is everything else, in the split's order."""
    if not task.dev_fraction:
        return data, None
    keys = [ex.key for ex in data.examples]
    strata = [task_kind(task.kind).stratum(ex, data.meta[ex.key]) for ex in data.examples]
    n_dev = subset_size(len(keys), task.dev_fraction)
    if n_dev >= len(keys):
        raise UserError(f"dev_fraction {task.dev_fraction:g} of {len(keys)} {task.name} training examples leaves "
                        "nothing to train on")
    dev_keys = set(stratified_order(keys, strata, DEV_SEED)[:n_dev])
    pool = [ex for ex in data.examples if ex.key not in dev_keys]
    dev = [ex for ex in data.examples if ex.key in dev_keys]
    return dataclasses.replace(data, examples=pool), dataclasses.replace(data, examples=dev)


def low_shot_examples(task: TaskConfig, data: TaskData, fraction: float, seed: int) -> list[TaskExample]:
    """The training subset for (fraction, seed) of `data` (the train split, or its pool after `split_dev`):
    nested across fractions of one seed, stratified by answer / label; from `task.splits`/lowshot.json when given
    (refused if made for other data)."""
    if task.splits:
        path = Path(task.splits) / "lowshot.json"
        doc = load_split(path, task=task.kind, source_sha256=data.source_sha256())
        if fraction >= 1.0:
            return data.examples
        ids = doc["ids"].get(f"seed{seed}", {}).get(f"{fraction:g}")
        if ids is None:
            have = {s: sorted(v) for s, v in doc["ids"].items()}
            raise UserError(f"{path} has no subset for seed {seed}, fraction {fraction:g} (it has {have}); "
                            "remake it with `clipdistill splits --fractions ... --seeds ...`")
        return select(data.examples, ids)
    if fraction >= 1.0:
        return data.examples
    keys = [ex.key for ex in data.examples]
    strata = [task_kind(task.kind).stratum(ex, data.meta[ex.key]) for ex in data.examples]
    return select(data.examples, low_shot(keys, strata, [fraction], [seed])[f"seed{seed}"][f"{fraction:g}"])
