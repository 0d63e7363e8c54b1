"""`run_distill`: build student, teacher(s), loss and loader from a `DistillConfig`, train with `fit`,
write the run folder (resolved config, manifest, checkpoints, metrics, `model.json` + `model.safetensors`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from clipdistill.config import dump_config
from clipdistill.distill.config import DistillConfig
from clipdistill.distill.inherit import inherit_weights
from clipdistill.distill.task import DistillTask
from clipdistill.distill.teacher import FrozenTeachers, view_prefix
from clipdistill.errors import UserError
from clipdistill.losses import build_loss
from clipdistill.manifest import write_manifest
from clipdistill.train import fit, init_distributed, shutdown
from clipdistill.zoo import load_model, save_run_model


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{what} needs {module}, which is not in this installation")


def build_task(cfg: DistillConfig, device: torch.device) -> tuple[DistillTask, dict]:
    torch.manual_seed(cfg.train.seed)  # same student init on every rank (DDP also broadcasts rank 0's)
    student = load_model(cfg.student.model)
    teachers = None
    if cfg.teacher.mode in ("online", "ensemble"):
        teachers = FrozenTeachers(cfg.teacher.models, device, cfg.teacher.logit_scale)
    elif cfg.teacher.mode == "cached":
        _require("clipdistill.features", "teacher.mode=cached (the feature store reader)")
        raise UserError("teacher.mode=cached is not wired to the feature store yet in this version")
    init = {"init": cfg.student.init}
    if cfg.student.init == "inherit":
        if teachers is None:
            raise UserError("student.init=inherit needs an online teacher (teacher.models) to inherit from")
        init.update(inherit_weights(student.inner, teachers.models[0].inner, cfg.student.inherit_layers))
    teacher_dim = teachers.dim if teachers else None
    loss = build_loss(cfg.loss, student.embed_dim, teacher_dim)
    if "teacher" in loss.needs and teachers is None:
        raise UserError(f"the losses {sorted(cfg.loss)} need a teacher, but teacher.mode={cfg.teacher.mode}")
    return DistillTask(student, loss, teachers, cfg.data.mask_ratio), init


def run_distill(cfg: DistillConfig, out: Path, resume: str | None = None) -> Path:
    _require("clipdistill.data", "distill")
    from clipdistill.data import make_loader, open_source

    if cfg.data.keep:
        _require("clipdistill.features", "data.keep (a balance output)")
        raise UserError("data.keep is not wired to the balance output yet in this version")
    info = init_distributed(cfg.train.device, cfg.train.collective_timeout_s)
    try:
        task, init = build_task(cfg, info.device)
        source = open_source(cfg.data.source)
        views = {"": (task.student.train_transform, task.student.tokenizer)}
        for i, t in enumerate(task.teachers.models if task.teachers else []):
            views[view_prefix(i)] = (t.eval_transform, t.tokenizer)

        def loader_factory(epoch: int, start_step: int = 0):
            return make_loader(source, views, cfg.data.batch_size, shuffle=True, seed=cfg.train.seed * 1000 + epoch,
                               num_workers=cfg.data.num_workers, rank=info.rank, world_size=info.world_size,
                               start_step=start_step, drop_last=True)

        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, out / "config.yaml")
            teachers = task.teachers.models if task.teachers else []
            write_manifest(out, "distill", student=cfg.student.model, init=init,
                           teachers=[{"spec": t.spec, "weights_sha256": t.weights_hash()} for t in teachers],
                           data={"source": cfg.data.source, "fingerprint": source.fingerprint()},
                           world_size=info.world_size)
        fit(task, loader_factory, cfg.train, out, resume=resume)
        if info.is_main:
            save_run_model(task.student, out)
    finally:
        shutdown(info)
    return out
