"""`run_distill`: build student, teacher(s), loss and loader from a `DistillConfig`, train with `fit`,
write the run folder (resolved config, manifest, checkpoints, metrics, `model.json` + `model.safetensors`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from clipdistill.distill.config import DistillConfig
from clipdistill.distill.inherit import inherit_weights
from clipdistill.distill.task import DistillTask
from clipdistill.distill.teacher import FrozenTeachers
from clipdistill.errors import UserError
from clipdistill.losses import LossInput, build_loss
from clipdistill.losses.base import loss_class
from clipdistill.manifest import read_manifest, write_manifest
from clipdistill.runfolder import history_fields, record_config
from clipdistill.train import fit, init_distributed, shutdown
from clipdistill.train.checkpoint import check_fits, resolve_resume
from clipdistill.train.distributed import summed_counts
from clipdistill.zoo import load_model, save_run_model

if TYPE_CHECKING:
    from clipdistill.distill.joins import DataJoins


def build_task(cfg: DistillConfig, device: torch.device, joins: DataJoins | None = None) -> tuple[DistillTask, dict]:
    """`joins`: the feature store / balance output of this run's source (needed for teacher.mode=cached,
    data.keep and the cluster loss)."""
    torch.manual_seed(cfg.train.seed)  # same student init on every rank (DDP also broadcasts rank 0's)
    student = load_model(cfg.student.model)
    teachers = None
    if cfg.teacher.mode in ("online", "ensemble"):
        teachers = FrozenTeachers(cfg.teacher.models, device, cfg.teacher.logit_scale)
    cached = joins is not None and joins.cached is not None
    if cfg.teacher.mode == "cached" and not cached:
        raise UserError("teacher.mode=cached: build the task with the run's data joins (the feature store)")
    init = {"init": cfg.student.init}
    if cfg.student.init == "inherit":
        if teachers is None:
            raise UserError("student.init=inherit needs an online teacher (teacher.models) to inherit from")
        init.update(inherit_weights(student.inner, teachers.models[0].inner, cfg.student.inherit_layers))
    teacher_dim = teachers.dim if teachers else joins.teacher_dim if cached else None
    # what the task hands the loss; build_loss refuses a term needing anything else, saying how to provide it
    provided = set(DistillTask.COMPUTES)
    provided |= teachers.provides if teachers else {LossInput.TEACHER} if cached else set()
    if cfg.data.hard_negatives != "none":
        provided.add(LossInput.HARD_NEGATIVES)
    labelled = joins is not None and joins.balance is not None
    if labelled:
        provided.add(LossInput.CLUSTER_LABELS)
    clusters = {}
    if labelled and any(LossInput.CLUSTER_LABELS in loss_class(name).needs for name in cfg.loss):
        t_hash = teachers.models[0].weights_hash() if teachers else joins.teacher_hash
        centres = joins.centres(t_hash)
        clusters = {"num_clusters": centres.shape[0], "centroids": centres}
        teacher_dim = teacher_dim or centres.shape[1]  # no teacher: project the student into the centres' space
    # sigmoid (SigLIP) models: the student's own bias, or one the loss owns; a sigmoid teacher's pairwise targets
    t_sigmoid = teachers.sigmoid if teachers else cached and joins.cached.logit_bias is not None
    if (teachers and not t_sigmoid and "logit_kd" in cfg.loss
            and any(m.logit_bias is not None for m in teachers.models)):
        raise UserError("loss 'logit_kd' does not average sigmoid (SigLIP) teachers: use one sigmoid teacher, "
                        "or an ensemble of CLIP teachers")
    loss = build_loss(cfg.loss, student.embed_dim, teacher_dim, **clusters, student_bias=student.logit_bias is not None,
                      teacher_sigmoid=bool(t_sigmoid), provided=provided)
    return DistillTask(student, loss, teachers, cfg.data.mask_ratio), init


def run_distill(cfg: DistillConfig, out: Path, resume: str | None = None) -> Path:
    from clipdistill.data import make_loader, open_source
    from clipdistill.data.sources import source_kwargs
    from clipdistill.distill.joins import DataJoins

    info = init_distributed(cfg.train.device, cfg.train.collective_timeout_s)
    try:
        source = open_source(cfg.data.source, **source_kwargs(cfg.data), num_samples=cfg.data.num_samples)
        joins = DataJoins(cfg, source)
        task, init = build_task(cfg, info.device, joins)
        # stored augmented views are already the training augmentation: only resize/normalise them
        student_tf = task.student.eval_transform if joins.replays else task.student.train_transform
        # the student's view, then each online teacher member's (DistillBatch.from_loader reads them in this order)
        views = [(student_tf, task.student.tokenizer)]
        views += [(t.eval_transform, t.tokenizer) for t in (task.teachers.models if task.teachers else [])]
        keys = joins.keys

        def loader_factory(epoch: int, start_step: int = 0):
            batches = make_loader(joins.source_for(source, epoch), views, cfg.data.batch_size, shuffle=True,
                                  seed=cfg.train.seed * 1000 + epoch, num_workers=cfg.data.num_workers,
                                  rank=info.rank, world_size=info.world_size, keys=keys, start_step=start_step,
                                  drop_last=True, device=info.device)
            return joins.wrap(batches, epoch)

        ckpt = resolve_resume(out, resume)
        if ckpt is not None:  # a config edited to another architecture is refused before the folder changes
            check_fits(ckpt, task.trainable())
        manifest: dict = {}
        if info.is_main:  # rank 0 alone hashes the teachers and writes the folder
            out.mkdir(parents=True, exist_ok=True)
            history = record_config(cfg, out, resumed=ckpt is not None)  # a changed config keeps the earlier one
            online = task.teachers.models if task.teachers else []
            teachers = [{"spec": t.spec, "weights_sha256": t.weights_hash(),
                         **({"load_warnings": t.load_warnings} if t.load_warnings else {})}
                        for t in online] + joins.teachers()
            manifest = dict(student=cfg.student.model, init=init, teachers=teachers,
                            data={"source": cfg.data.source, "fingerprint": joins.fingerprint, **joins.data()},
                            world_size=info.world_size, **history_fields(history))
            write_manifest(out, "distill", **manifest)
        fit(task, loader_factory, cfg.train, out, resume=resume, counts=source.skips)
        # every read that dropped a sample, over all ranks and epochs (a resume carries the checkpoint's counts)
        skips = summed_counts(source.skips, info)
        if info.is_main:
            save_run_model(task.student, out)
            schedule = read_manifest(out).get("schedule")  # fit's record of run length and warmup
            extra = {"schedule": schedule} if schedule else {}
            write_manifest(out, "distill", **manifest, skipped_reads=skips, **extra)
    finally:
        shutdown(info)
    return out
