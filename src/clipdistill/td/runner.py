"""One fine-tuning run (a protocol cell, or `clipdistill finetune`): build the student, the task and the data,
train through the shared loop, evaluate, export the task model (student + head only)."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from clipdistill.config import StrictModel, build_config, dump_config
from clipdistill.errors import UserError
from clipdistill.manifest import atomic_write_text, sha256_file
from clipdistill.td.examples import TaskExample, TaskKind, read_task_jsonl, vcr_items
from clipdistill.td.heads import build_answer_vocab
from clipdistill.td.student import StudentConfig, build_student
from clipdistill.td.task import Collator, TDConfig, TDTask, evaluate

Trainer = Callable[..., Any]  # fit(task, loader_factory, train_cfg, run_dir) from clipdistill.train


class TaskData(StrictModel):
    name: str
    kind: TaskKind
    train: str  # jsonl task file (examples.py format)
    val: str
    shift_tests: dict[str, str] = {}  # domain-shifted test sets, evaluated with the same trained model
    max_answers: int = 3129  # VQA answer vocabulary size (the usual VQA v2 choice)


class FinetuneConfig(StrictModel):
    task: TaskData
    student: StudentConfig = StudentConfig()
    teacher: str | None = None  # zoo SPEC; required unless td.method == baseline
    td: TDConfig = TDConfig()
    batch_size: int = 16
    eval_batch_size: int = 32
    fraction: float = 1.0  # of the training set (nested low-shot subset)
    seed: int = 0
    train: dict[str, Any] = {}  # passed to clipdistill.train.TrainConfig (epochs, lr, ...)
    out: str = "runs/finetune"


def nested_subset(keys: list[str], fraction: float, seed: int) -> set[str]:
    """Deterministic low-shot subset: keys ordered by sha256(seed, key), first ceil(f * n) kept, so the
    subsets of one seed are nested (1% within 5% within ...). Replace by `splits` manifests when given."""
    if not 0 < fraction <= 1:
        raise UserError(f"fraction must be in (0, 1], got {fraction}")
    order = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    return set(order[: max(1, math.ceil(len(order) * fraction - 1e-9))])


def _items(examples: list[TaskExample], kind: TaskKind) -> list:
    return [it for ex in examples for it in vcr_items(ex)] if kind == "vcr" else examples


def _batches(items: list, collate: Collator, size: int, order: list[int] | None = None):
    idx = order if order is not None else list(range(len(items)))
    for i in range(0, len(idx), size):
        yield collate([items[j] for j in idx[i : i + size]])


def default_trainer() -> Trainer:
    try:
        from clipdistill.train import fit
    except ImportError:
        raise UserError("the shared training loop (clipdistill.train) is not installed in this checkout") from None
    return fit


def _train_config(cfg: FinetuneConfig):
    from clipdistill.train import TrainConfig

    return build_config(TrainConfig, {"seed": cfg.seed, **cfg.train}, source="train section")


def run_finetune(cfg: FinetuneConfig, run_dir: Path, trainer: Trainer | None = None,
                 train_config: Any = None) -> dict[str, Any]:
    """Train + evaluate one configuration; returns {"val": metrics, "shift:NAME": metrics, ...}."""
    from clipdistill.zoo import load_model

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    data = cfg.task
    train_ex = read_task_jsonl(data.train, data.kind)
    keep = nested_subset([ex.key for ex in train_ex], cfg.fraction, cfg.seed)
    train_ex = [ex for ex in train_ex if ex.key in keep]
    vocab = build_answer_vocab([ex.answers for ex in train_ex], data.max_answers) if data.kind == "vqa" else None
    student, init_info = build_student(cfg.student)
    teacher = load_model(cfg.teacher) if cfg.teacher and cfg.td.distils else None
    task = TDTask(data.kind, student, cfg.td, teacher, vocab)
    collate = Collator(data.kind, student, task.teacher, vocab, cfg.td.vqa_distractors)
    items = _items(train_ex, data.kind)

    def loader_factory(epoch: int):
        order = list(range(len(items)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        return _batches(items, collate, cfg.batch_size, order)

    fit = trainer or default_trainer()
    fit(task, loader_factory, train_config if train_config is not None else _train_config(cfg), run_dir)
    eval_collate = Collator(data.kind, student, None, vocab)
    results = {}
    for name, path in {"val": data.val, **{f"shift:{k}": v for k, v in data.shift_tests.items()}}.items():
        ev = _items(read_task_jsonl(path, data.kind), data.kind)
        results[name] = evaluate(task, _batches(ev, eval_collate, cfg.eval_batch_size))
    export_task_model(task, run_dir, {"kind": data.kind, "student": student.cfg.model_dump(), "vocab": vocab,
                                      "init": init_info, "train_file_sha256": sha256_file(data.train)})
    return results


def export_task_model(task: TDTask, run_dir: Path, meta: dict[str, Any]) -> Path:
    """`task_model.safetensors` (student + head) + `task_model.json`: the inference model, no teacher parts."""
    state = {f"{name}.{k}": v.detach().contiguous() for name, mod in task.export_modules().items()
             for k, v in mod.state_dict().items()}
    save_file(state, str(run_dir / "task_model.safetensors"))
    atomic_write_text(run_dir / "task_model.json", json.dumps(meta, indent=2))
    return run_dir / "task_model.safetensors"
