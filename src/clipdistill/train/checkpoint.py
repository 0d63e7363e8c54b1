"""Training checkpoints: `checkpoints/step_XXXXXXX/` = `model.safetensors` (every trainable module, keys
`<name>.<param>`) + `state.pt` (optimizer, scaler, step, data position, RNG states), plain tensors and
containers only so `safeload.load_object` reads it without unpickling code.

A checkpoint is written into a hidden temp folder and renamed into place, so a run killed mid-write leaves
either the previous checkpoint or the new one, never half of one; `latest_checkpoint` ignores temp folders.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from clipdistill.errors import UserError
from clipdistill.safeload import load_object, load_tensors

CKPT_DIR, WEIGHTS, STATE = "checkpoints", "model.safetensors", "state.pt"
PREFIX = "step_"


@dataclass
class Position:
    """Where training stands: optimizer steps done, and the data position of the next batch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # loader batches of `epoch` already consumed


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy arrays are not weights-only loadable: store the MT19937 key as a tensor
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def module_state(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in modules.items()
            for k, v in m.state_dict().items()}


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"{PREFIX}{step:07d}"


def save_checkpoint(run_dir: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, pos: Position, keep_last: int,
                    counts: dict[str, int] | None = None) -> Path:
    """`counts`: the run's counts so far over all ranks (e.g. dropped reads per reason), restored on resume."""
    final = step_dir(run_dir, pos.step)
    tmp = final.with_name(f".tmp_{final.name}_{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    state = {"step": pos.step, "epoch": pos.epoch, "batch_in_epoch": pos.batch_in_epoch,
             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
             "rng": rng_state(), "counts": dict(counts or {})}
    try:
        tmp.mkdir(parents=True)
        save_file(module_state(modules), str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        for f in (tmp / WEIGHTS, tmp / STATE):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        kept = list_checkpoints(run_dir)
        raise UserError(f"could not write checkpoint {final.name} ({e}); nothing of it was kept. Last good "
                        f"checkpoint: {kept[-1] if kept else 'none'}. Free space, then --resume latest") from None
    if final.exists():  # same step saved twice (e.g. resumed right at the end): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune(run_dir, keep_last)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
            and (p / WEIGHTS).is_file() and (p / STATE).is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def prune(run_dir: Path, keep_last: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """`None` -> fresh start; `latest` -> newest complete checkpoint of run_dir (none yet = fresh); else a path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not ((path / WEIGHTS).is_file() and (path / STATE).is_file()):
        raise UserError(f"--resume {resume}: not a checkpoint folder (needs {WEIGHTS} and {STATE})")
    return path


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None) -> tuple[Position, dict[str, Any], dict[str, int]]:
    """Restore weights, optimizer and scaler in place; returns the position, the RNG state to apply once the
    data iterator has been rebuilt (so building it does not shift the random streams) and the saved counts
    (empty for checkpoints written before they were saved)."""
    tensors = load_tensors(path / WEIGHTS)
    for name, m in modules.items():
        part = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(f"{name}.")}
        missing, unexpected = m.load_state_dict(part, strict=False)
        if missing or unexpected:
            raise UserError(f"{path}: checkpoint does not fit module {name!r} "
                            f"(missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]})")
    state = load_object(path / STATE)
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as e:  # torch: another number or size of parameter groups
        raise UserError(f"{path}: the saved optimizer does not fit this run ({e}); was train.lr_scale changed?"
                        ) from None
    for group, scale in zip(optimizer.param_groups, scales, strict=True):
        group["lr_scale"] = scale  # the run's config decides, not the checkpoint (old ones have no scale)
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return Position(state["step"], state["epoch"], state["batch_in_epoch"]), state["rng"], state.get("counts", {})
