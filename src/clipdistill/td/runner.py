"""One fine-tuning run (a protocol cell, or `clipdistill finetune`): build the student, the task and the data,
train through the shared loop, evaluate, export the task model (student + head only)."""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from clipdistill.config import StrictModel, TeacherModels
from clipdistill.data.tasks import TaskData
from clipdistill.errors import UserError
from clipdistill.manifest import MANIFEST, atomic_write_text, read_manifest, write_manifest
from clipdistill.runfolder import history_fields, record_config
from clipdistill.safeload import save_tensors
from clipdistill.td.batch import TDBatch
from clipdistill.td.cached import CachedImageTeacher
from clipdistill.td.data import TaskConfig, TaskReader, low_shot_examples, split_dev, task_folder
from clipdistill.td.examples import TaskExample
from clipdistill.td.export_hf import export_vilt
from clipdistill.td.prior import prior_metrics
from clipdistill.td.samples import save_td_samples
from clipdistill.td.student import VLStudentConfig, build_student, check_student
from clipdistill.td.task import Collator, TDConfig, TDTask, evaluate
from clipdistill.td.tasks import task_kind
from clipdistill.train.checkpoint import list_checkpoints
from clipdistill.train.config import TrainConfig

Trainer = Callable[..., Any]  # fit(task, loader_factory, train_cfg, run_dir) from clipdistill.train


class TDTeacher(TeacherModels):
    """`teacher: {models: [SPEC]}`: the CLIP a naive / CLIP-TD run distils from (one SPEC; none for baseline)."""

    @field_validator("models")
    @classmethod
    def _one(cls, models: list[str]) -> list[str]:
        if len(models) > 1:
            raise ValueError(f"finetune / protocol distil from one teacher, got {len(models)}: {models}")
        return models

    @property
    def spec(self) -> str | None:
        return self.models[0] if self.models else None


def teacher_section(value: Any) -> Any:
    """The old spelling `teacher: SPEC` (and null) as `{models: [SPEC]}`, for configs and recorded cells."""
    if value is None:
        return {"models": []}
    return {"models": [value]} if isinstance(value, str) else value


class TDRunSettings(StrictModel):
    """The sections a `finetune` run and a `protocol` sweep share; the protocol hands them to every cell as
    they are (`shared_settings`)."""

    world: str | None = None  # embedded world (or any root): relative task folders are resolved under it
    student: VLStudentConfig = VLStudentConfig()
    teacher: TDTeacher = TDTeacher()  # {models: [SPEC]}; required unless td.method == baseline
    td: TDConfig = TDConfig()
    batch_size: int = 16
    eval_batch_size: int = 32
    # the shared loop's settings, validated with the rest of the config (a misspelt key fails before anything
    # runs); a finetune's / cell's train.seed defaults to its `seed`, so the recorded config names the seed used
    train: TrainConfig = TrainConfig()
    out: str | None = None  # the output folder when the command is given no --out (config.with_out)

    @field_validator("teacher", mode="before")
    @classmethod
    def _old_teacher_spelling(cls, value: Any) -> Any:
        if isinstance(value, str):
            warnings.warn(f"`teacher: {value}` is the old spelling, still read: write `teacher: {{models: [{value}]}}`"
                          " (`--set teacher.models=[SPEC]`)", FutureWarning, stacklevel=2)
        return teacher_section(value)


def shared_settings(cfg: TDRunSettings) -> dict[str, Any]:
    """`cfg`'s shared sections (all but the location `out`), as keyword arguments of a FinetuneConfig."""
    return {name: getattr(cfg, name) for name in TDRunSettings.model_fields if name != "out"}


class FinetuneConfig(TDRunSettings):
    task: TaskConfig
    fraction: float = Field(1.0, gt=0, le=1)  # of the training split (nested, stratified low-shot subset)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _train_seed_follows_seed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        seed, train = data.get("seed", 0), data.get("train")
        if train is None:
            train = {}
        if isinstance(train, dict) and "seed" not in train:
            return {**data, "train": {**train, "seed": seed}}
        if isinstance(train, TrainConfig) and "seed" not in train.model_fields_set:
            return {**data, "train": train.model_copy(update={"seed": seed})}
        return data


class _Batches:
    """The collated batches of `items` in `order` (default: as given), `size` at a time. Sized, so the training loop
    counts an epoch by `len()` instead of collating (decoding every image of) a whole pass first."""

    def __init__(self, items: list, collate: Collator, size: int, order: list[int] | None = None):
        self.items, self.collate, self.size = items, collate, size
        self.order = order if order is not None else list(range(len(items)))

    def __len__(self) -> int:
        return -(-len(self.order) // self.size)

    def __iter__(self) -> Iterator[TDBatch]:
        for i in range(0, len(self.order), self.size):
            yield self.collate([self.items[j] for j in self.order[i : i + self.size]])


def default_trainer() -> Trainer:
    from clipdistill.train import fit

    return fit


def cell_data(cfg: FinetuneConfig, reader: TaskReader) -> tuple[TaskData, dict[str, TaskData], list[TaskExample]]:
    """(train split, {result name: split scored}, the training subset) of a run: "train_dev" (the dev carve, when
    the task has one), "val" and "shift:NAME"; the subset is the fraction / seed draw from the rest of train."""
    spec = cfg.task
    train_data = reader.open(spec, cfg.world, spec.train_split)
    evals = {name: reader.open(spec, cfg.world, split) for name, split in spec.eval_splits().items()}
    pool, dev = split_dev(spec, train_data)
    if dev is not None:
        evals = {"train_dev": dev, **evals}
    return train_data, evals, low_shot_examples(spec, pool, cfg.fraction, cfg.seed)


def run_finetune(cfg: FinetuneConfig, run_dir: Path, trainer: Trainer | None = None, train_config: Any = None,
                 reader: TaskReader | None = None, log: Callable[[str], None] = print,
                 only: Collection[str] | None = None, main: bool = True) -> dict[str, Any]:
    """Train + evaluate one configuration; returns {"val": metrics, "shift:NAME": metrics, ...} (+ "train_dev"
    when the task carves a dev set from train).
    `reader` lets a protocol share opened splits between its cells; `only` names the results to score (a
    protocol's option selection: ("train_dev",), so val and the shift splits are never evaluated). `main`: false
    on torchrun ranks > 0, which train and then leave scoring and the exports to rank 0 (returning {}): the
    weights are the same on every rank, and ranks writing one export folder at once could interleave its files."""
    from clipdistill.zoo import load_model

    reader = reader or TaskReader(log)
    spec = cfg.task
    train_data, evals, train_ex = cell_data(cfg, reader)
    if only is not None:
        missing = sorted(set(only) - set(evals))
        if missing:
            raise UserError(f"{spec.name}: no {missing} split to score (train_dev needs task.dev_fraction)")
        evals = {name: data for name, data in evals.items() if name in only}
    check_student(cfg.student)  # a bad hf: folder fails before the run folder is written
    run_dir.mkdir(parents=True, exist_ok=True)
    # the folder holds checkpoints only when they are resumed: `finetune` refuses a used folder without --resume,
    # and a protocol cell's checkpoints made under another config are removed before it runs; rank 0 writes
    history = record_config(cfg, run_dir, resumed=bool(list_checkpoints(run_dir))) if main else []
    if cfg.td.method == "prior":  # the answer-prior floor: label statistics of the subset, nothing trains
        return prior_metrics(spec.kind, train_ex, train_data.meta, evals)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    kind = task_kind(spec.kind)
    vocab = kind.answer_vocab(train_ex, spec.max_answers)
    student, init_info = build_student(cfg.student)
    teacher = load_model(cfg.teacher.spec) if cfg.teacher.spec and cfg.td.distils else None
    task = TDTask(spec.kind, student, cfg.td, teacher, vocab)
    bias = kind.prior_bias(train_ex, vocab, task.head.output.out_features) if cfg.td.head_bias == "prior" else None
    if bias is not None:  # draws nothing: the RNG stream (and a resume's replay) is the same either way
        with torch.no_grad():
            task.head.output.bias.copy_(bias)
    cached = None
    if task.teacher is not None and spec.teacher_features:
        image_dir = kind.image_dir(task_folder(spec, cfg.world), spec.images)
        cached = CachedImageTeacher(spec.teacher_features, task.teacher, image_dir)
        cached.check_covers([ex.image for ex in train_ex])
    # the confidence weights' candidates are fitted on the training subset only
    candidates = kind.candidate_policy(train_ex, train_data.meta, vocab, cfg.td)
    collate = Collator(spec.kind, student, task.teacher, vocab, candidates, cached=cached,
                       text_alignment=cfg.td.text_alignment)
    items = kind.items(train_ex)
    if main:
        write_manifest(run_dir, "finetune", student=init_info, text_alignment=_alignment_note(task, collate),
                       **history_fields(history))

    def loader_factory(epoch: int):
        order = list(range(len(items)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        return _Batches(items, collate, cfg.batch_size, order)

    fit = trainer or default_trainer()
    fit(task, loader_factory, train_config if train_config is not None else cfg.train, run_dir)
    if not main:
        return {}
    manifest = read_manifest(run_dir)
    manifest["text_alignment"] = _alignment_note(task, collate)
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    eval_collate = Collator(spec.kind, student, None, vocab)
    results = {name: evaluate(task, _Batches(kind.items(data.examples), eval_collate, cfg.eval_batch_size))
               for name, data in evals.items()}
    export_task_model(task, run_dir, {
        "kind": spec.kind, "student": student.describe(), "vocab": vocab, "init": init_info,
        "data": {"train_split": spec.train_split, "source_sha256": train_data.source_sha256(),
                 "train_examples": len(train_ex), "fraction": cfg.fraction, "seed": cfg.seed}})
    if getattr(student, "family", "") == "hf_vilt":
        export_vilt(task, run_dir)  # task_model_hf/: loads with transformers (td/export_hf.py)
    save_td_samples(task, collate, items, run_dir)  # the report's picture of what was distilled
    return results


def _alignment_note(task: TDTask, collate: Collator) -> dict[str, Any]:
    """How the student's text tokens met the teacher's, for the run's manifest."""
    if task.teacher is None:
        return {"method": "none", "note": "no teacher: nothing is distilled"}
    if task.student.token_spans is None:
        return {"method": "positions", "note": "the student uses the CLIP BPE tokenizer: its token positions are "
                "the teacher's (truncated / padded to the student's context length)"}
    note = {"method": collate.text_alignment, "texts_aligned_by_words": collate.aligned_rows,
            "texts_pooled": collate.pooled_rows}
    if collate.text_alignment == "pooled":
        note["note"] = ("td.text_alignment=pooled: every student text token is distilled towards the teacher's "
                        "pooled text feature")
    else:
        note["note"] = ("the student's tokenizer is not the teacher's: text tokens are matched by words (character "
                        "spans, td/align.py); texts whose teacher spans could not be recovered fall back to the "
                        "pooled teacher text (texts_pooled)")
    return note


def export_task_model(task: TDTask, run_dir: Path, meta: dict[str, Any]) -> Path:
    """`task_model.safetensors` (student + head) + `task_model.json`: the inference model, no teacher parts."""
    state = {f"{name}.{k}": v.detach().cpu().contiguous() for name, mod in task.export_modules().items()
             for k, v in mod.state_dict().items()}
    save_tensors(state, run_dir / "task_model.safetensors")  # atomic; the umask's mode, not 0600
    atomic_write_text(run_dir / "task_model.json", json.dumps(meta, indent=2))
    return run_dir / "task_model.safetensors"
