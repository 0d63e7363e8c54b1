"""`fit`: the one training loop. A task supplies the trainable modules and the forward with named loss
terms; the loop owns everything else (optimizer, schedule, accumulation, AMP, DDP, checkpoints, resume,
NaN stop, logging). `distill` and `finetune` both run through it.
"""

from __future__ import annotations

import inspect
import json
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from clipdistill.errors import UserError
from clipdistill.manifest import MANIFEST, atomic_write_text, read_manifest
from clipdistill.runfolder import StopSignals
from clipdistill.train.checkpoint import (
    Position,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clipdistill.train.config import TrainConfig
from clipdistill.train.distributed import (
    DistInfo,
    all_finite,
    all_ranks,
    collective_failure,
    init_distributed,
    mean_across,
    min_across,
    summed_counts,
)
from clipdistill.train.metrics import MetricsLog, ProgressBar
from clipdistill.train.optim import build_optimizer
from clipdistill.train.schedule import lr_factor, set_lr

LoaderFactory = Callable[..., Iterable[dict]]  # (epoch) or (epoch, start_step=...) -> batches
Evaluate = Callable[[int], dict[str, float]]


class Task(Protocol):
    def trainable(self) -> dict[str, nn.Module]: ...

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]: ...  # a dict, or the task's batch class


class NonFiniteLoss(UserError):
    """The loss became NaN/inf: the run stops, the last good checkpoint stays on disk."""


class _TaskModule(nn.Module):
    """Holds the task's trainable modules so DDP sees exactly them (the teacher stays outside) and routes
    the DDP forward through `task.training_step`."""

    def __init__(self, task: Task, modules: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        object.__setattr__(self, "task", task)  # not a submodule: a teacher inside must not join DDP

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.task.training_step(batch)


def gathered_rng_states(info: DistInfo) -> list[dict[str, Any]] | None:
    """Every rank's RNG state on rank 0 (None on one process: the checkpoint's own state is rank 0's)."""
    if not info.enabled:
        return None
    states: list = [None] * info.world_size
    dist.all_gather_object(states, rng_state())
    return states


def to_device(obj: Any, device: torch.device) -> Any:
    """A tensor, a dict of them, or a task's batch object with its own `to(device, non_blocking)`."""
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor) or callable(getattr(obj, "to", None)):
        return obj.to(device, non_blocking=True)
    return obj


def batch_size(batch: Any) -> int:
    """Samples in a batch: a dict's first batched tensor, or `len()` of a task's batch object."""
    if not isinstance(batch, dict):
        return len(batch)
    return next((v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim), 0)


def epoch_batches(factory: LoaderFactory, epoch: int, start: int) -> Iterator[dict]:
    """Batches of `epoch` from batch `start` on: the factory skips them itself when it takes `start_step`
    (cheap, by index), otherwise they are drawn and dropped."""
    if start and "start_step" in inspect.signature(factory).parameters:
        return iter(factory(epoch, start_step=start))
    it = iter(factory(epoch))
    for _ in range(start):
        next(it, None)
    return it


def epoch_length(factory: LoaderFactory) -> tuple[int, dict | None]:
    """Batches per epoch on this rank, and for a stream what its count came from (for the manifest).

    `len()` where the loader has one; a stream's `epoch_count()` (data.Batches: from the source's sample count,
    nothing decoded); else `count()` or, last, a pass over the batches."""
    loader = factory(0)
    try:
        return len(loader), None  # type: ignore[arg-type]
    except TypeError:
        pass
    if (epoch_count := getattr(loader, "epoch_count", None)) is not None:
        c = epoch_count()
        return c.batches, {"samples": c.samples, "from": c.origin, "batches_per_rank": c.batches}
    with torch.random.fork_rng(devices=[]):  # a counting pass must not move the training RNG
        count = getattr(loader, "count", None)
        return (count() if count else sum(1 for _ in loader)), None


def enable_grad_checkpointing(modules: dict[str, nn.Module]) -> None:
    for name, m in modules.items():
        if hasattr(m, "set_grad_checkpointing"):  # open_clip's own name; a wrapper (zoo.ClipModel) forwards it
            m.set_grad_checkpointing(True)
        elif any(p.requires_grad for p in m.parameters()) and name != "loss":
            raise UserError(f"train.grad_checkpointing: module {name!r} ({type(m).__name__}) cannot do it")


def seed_everything(seed: int) -> None:
    """torch, numpy and python streams: tasks and transforms may draw from any of them."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def note_schedule(run_dir: Path, total: int, warmup: int, warning: str | None, epoch: dict | None = None) -> None:
    """The run's length and warmup in steps into its manifest (when the stage wrote one), and a warmup that
    covers the whole run as a warning there and on stderr: a preset's fixed warmup on a short run. `epoch`: a
    stream's count (samples, what gave it, batches per rank), also printed."""
    if warning:
        warnings.warn(warning, stacklevel=3)
    if epoch:
        print(f"data: {epoch['samples']} samples (from {epoch['from']}): {epoch['batches_per_rank']} batches an "
              f"epoch, {total} optimizer steps", flush=True)
    fields = {"total_steps": total, "warmup_steps": warmup, **({"warning": warning} if warning else {})}
    _update_schedule(run_dir, {**fields, **({"epoch": epoch} if epoch else {})}, replace=True)


def _update_schedule(run_dir: Path, fields: dict, replace: bool = False) -> None:
    """The manifest's `schedule`: replaced (at the start of a run, a resumed one's too) or added to; the first
    short epoch's note stays across resumes."""
    if (run_dir / MANIFEST).is_file():
        data = read_manifest(run_dir)
        old = data.get("schedule", {})
        kept = {"short_epoch": old["short_epoch"]} if "short_epoch" in old else {}
        data["schedule"] = {**fields, **kept} if replace else {**old, **fields, **kept}
        atomic_write_text(run_dir / MANIFEST, json.dumps(data, indent=2, default=str))


def _autocast(cfg: TrainConfig, device: torch.device):
    if device.type != "cuda" or cfg.precision == "fp32":
        return nullcontext()  # AMP is a GPU feature here; CPU runs stay fp32 (and bitwise reproducible)
    return torch.autocast("cuda", dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float16)


class _Trainer:
    def __init__(self, task: Task, factory: LoaderFactory, cfg: TrainConfig, run_dir: Path,
                 evaluate: Evaluate | None, info: DistInfo, counts: Counter | None = None):
        self.task, self.factory, self.cfg, self.run_dir, self.evaluate, self.info = (
            task, factory, cfg, run_dir, evaluate, info)
        self.counts = counts
        self.modules = task.trainable()
        for m in self.modules.values():
            m.to(info.device).train()
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(self.modules)
        self.model: nn.Module = _TaskModule(task, self.modules)
        if info.enabled:
            ids = [info.local_rank] if info.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids,
                                                 find_unused_parameters=cfg.ddp_find_unused_parameters)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.modules, cfg)
        fp16 = info.device.type == "cuda" and cfg.precision == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.last_checkpoint: Path | None = None
        self.saved_step = -1
        self.stop = StopSignals()
        self.epoch: dict | None = None  # a stream's count: what gave it, batches per rank
        self.per_epoch = 0
        self.said_short = False

    def micro_step(self, batch: dict, sync: bool, pos: Position) -> dict[str, torch.Tensor]:
        no_sync = self.model.no_sync() if self.info.enabled and not sync else nullcontext()
        with no_sync:
            with _autocast(self.cfg, self.info.device):
                out = self.model(to_device(batch, self.info.device))
            if not all_finite(out["loss"], self.info):
                terms = {k: float(v.detach().float().mean()) for k, v in out.items()}
                kept = self.last_checkpoint or "none (no checkpoint written yet)"
                raise NonFiniteLoss(f"non-finite loss at step {pos.step} (epoch {pos.epoch}): {terms}. "
                                    f"Stopped; last good checkpoint: {kept}")
            loss = out["loss"] / self.cfg.accum_steps
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        return {k: v.detach().float().mean() for k, v in out.items()}

    def optimizer_step(self) -> float | None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.cfg.grad_clip:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def save(self, pos: Position) -> None:
        counts = summed_counts(self.counts, self.info) if self.counts is not None else None  # every rank joins
        rngs = gathered_rng_states(self.info)  # every rank joins
        if self.info.is_main:
            self.last_checkpoint = save_checkpoint(self.run_dir, self.modules, self.optimizer, self.scaler, pos,
                                                   self.cfg.keep_last, counts, rank_rngs=rngs)
        self.saved_step = pos.step

    def stop_requested(self) -> bool:
        """Whether any rank got a stop signal; every rank calls it after each step, so all stop at the same one."""
        signum = self.stop.signum or 0
        if self.info.enabled:
            signum = -min_across(-signum, self.info)  # the max: a rank the signal missed learns it here
            if signum and self.stop.signum is None:
                self.stop.signum = signum
        return signum > 0

    def run(self, resume: str | None) -> None:
        cfg, info = self.cfg, self.info
        batches, self.epoch = epoch_length(self.factory)
        per_epoch = min_across(batches, info) // cfg.accum_steps  # the same on every rank
        self.per_epoch = per_epoch
        if per_epoch == 0:
            raise UserError(f"the data gives fewer than accum_steps={cfg.accum_steps} batches: nothing to train on")
        total = cfg.steps or cfg.epochs * per_epoch
        self.warmup = cfg.warmup_for(total)
        ckpt = resolve_resume(self.run_dir, resume)
        pos, rng = Position(), None
        if ckpt is not None:  # before the manifest is touched: load_checkpoint refuses another architecture first
            pos, rng, counts = load_checkpoint(ckpt, self.modules, self.optimizer, self.scaler, info.rank,
                                               info.world_size)
            self.last_checkpoint = ckpt
            if self.counts is not None and info.is_main:  # the sum over ranks lives on rank 0 alone
                self.counts.update(counts)
            if rng is None:  # no state for this rank (another process count): restart its streams from the position
                seed_everything(cfg.seed + 1000003 * info.rank + pos.step)
        if info.is_main:
            note_schedule(self.run_dir, total, self.warmup, cfg.warmup_warning(total), self.epoch)
        log = MetricsLog(self.run_dir, info.is_main, cfg.tensorboard, pos.step if resume else None)
        bar = ProgressBar(total, pos.step, cfg.progress and info.is_main)
        try:
            with self.stop:
                self._epochs(pos, total, rng, log, bar)
        finally:
            bar.close()
            log.close()

    def _epochs(self, pos: Position, total: int, rng: dict | None, log: MetricsLog, bar: ProgressBar) -> None:
        cfg = self.cfg
        while pos.step < total:
            batches = epoch_batches(self.factory, pos.epoch, pos.batch_in_epoch)
            if rng is not None:  # after the iterator exists: building it must not shift the restored streams
                set_rng_state(rng)
                rng = None
            start = pos.step
            while pos.step < total:
                micro = [b for _, b in zip(range(cfg.accum_steps), batches, strict=False)]
                # end of epoch (a partial accumulation group is dropped) as soon as any rank runs out: ranks may
                # hold different batch counts (uneven stream shards, a batch whose every sample was dropped)
                if not all_ranks(len(micro) == cfg.accum_steps, self.info):
                    break
                t0 = time.perf_counter()
                lr = set_lr(self.optimizer, cfg.lr, lr_factor(pos.step, total, self.warmup, cfg.min_lr_ratio))
                terms = [self.micro_step(b, i == len(micro) - 1, pos) for i, b in enumerate(micro)]
                norm = self.optimizer_step()
                pos.step += 1
                pos.batch_in_epoch += cfg.accum_steps
                samples = sum(batch_size(b) for b in micro) * self.info.world_size
                if pos.step % cfg.log_every == 0 or pos.step == total:
                    self._log(pos, terms, lr, norm, samples / (time.perf_counter() - t0), log, bar)
                if self.evaluate and cfg.eval_every and pos.step % cfg.eval_every == 0:
                    self._evaluate(pos.step, log)
                if pos.step % cfg.save_every == 0 or pos.step == total:
                    self.save(pos)
                if self.stop_requested() and pos.step < total:  # at the last step: finish instead
                    if self.saved_step != pos.step:
                        self.save(pos)
                    where = self.last_checkpoint if self.info.is_main else f"step {pos.step}"
                    raise self.stop.stop(f"after optimizer step {pos.step} of {total}; checkpoint: {where}")
            if pos.step < total:  # the epoch ran out of batches
                if pos.step == start and pos.batch_in_epoch == 0:
                    raise UserError(f"epoch {pos.epoch} gave no batches: the loader is empty for this epoch")
                self._short_epoch(pos)
                pos.epoch += 1
                pos.batch_in_epoch = 0

    def _short_epoch(self, pos: Position) -> None:
        """A stream that held fewer usable samples than counted (images found undecodable only when read, a
        count set too high) ends its epoch early; the run keeps its total steps and schedule, going on with
        the next epoch. Said once, on stderr and in the manifest."""
        done = pos.batch_in_epoch // self.cfg.accum_steps
        if self.epoch is None or done >= self.per_epoch or self.said_short:
            return
        self.said_short = True
        note = {"epoch": pos.epoch, "steps": done, "counted_steps": self.per_epoch}
        warnings.warn(f"epoch {pos.epoch} ended after {done} of the {self.per_epoch} steps counted from "
                      f"{self.epoch['from']} ({self.epoch['samples']} samples): the data held fewer usable "
                      "samples (dropped reads, or a count set too high); the run goes on into the next epoch "
                      "for its planned steps", stacklevel=2)
        if self.info.is_main:
            _update_schedule(self.run_dir, {"short_epoch": note})

    def _log(self, pos, terms, lr, norm, samples_per_s, log: MetricsLog, bar: ProgressBar) -> None:
        mean = {k: float(sum(t[k] for t in terms) / len(terms)) for k in terms[0]}
        mean = mean_across(mean, self.info)
        record = {"step": pos.step, "epoch": pos.epoch, "lr": lr, **mean, "samples_per_s": samples_per_s}
        if norm is not None:
            record["grad_norm"] = norm
        log.write(record)
        bar.update(pos.step, {**mean, "samples/s": samples_per_s})

    def _evaluate(self, step: int, log: MetricsLog) -> None:
        if self.info.is_main:
            results = self.evaluate(step)
            log.write({"step": step, **{f"eval/{k}": v for k, v in results.items()}})
            for m in self.modules.values():
                m.train()
        if self.info.enabled:
            dist.barrier()


def fit(task: Task, loader_factory: LoaderFactory, cfg: TrainConfig, run_dir: str | Path, *,
        resume: str | None = None, evaluate: Evaluate | None = None, counts: Counter | None = None) -> Path:
    """Train `task` on the batches of `loader_factory(epoch)` (or `(epoch, start_step=N)`), writing
    checkpoints and metrics into `run_dir`. `resume="latest"` continues from the newest checkpoint there.

    `counts`: this rank's running counts that the batches add to (the source's dropped reads). Checkpoints
    hold their sum over ranks; a resume adds it back to rank 0's, so summing over ranks at the end gives the
    whole run's counts, the killed part's included.

    The factory must give the same batches for the same epoch (order from (seed, epoch)); under DDP it
    shards by rank and every rank must get the same number of batches.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:  # process-wide on purpose: the evaluation that follows a fit runs with the same budget
        torch.set_num_threads(cfg.threads)
    info = init_distributed(cfg.device, cfg.collective_timeout_s)
    seed_everything(cfg.seed + 1000003 * info.rank)
    trainer = _Trainer(task, loader_factory, cfg, run_dir, evaluate, info, counts)
    try:
        trainer.run(resume)
    except UserError:
        raise
    except RuntimeError as e:
        if info.enabled and (isinstance(e, dist.DistError) or any(
                w in str(e).lower() for w in ("timed out", "timeout", "connection", "peer"))):
            raise collective_failure(e) from None
        raise
    return run_dir
