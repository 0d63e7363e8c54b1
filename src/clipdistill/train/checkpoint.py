"""Training checkpoints: `checkpoints/step_XXXXXXX/` = `model.safetensors` (every trainable module, keys
`<name>.<param>`) + `state.pt` (optimizer, scaler, step, data position, RNG states), plain tensors and
containers only so `safeload.load_object` reads it without unpickling code.

A checkpoint is written into a hidden temp folder and renamed into place, so a run killed mid-write leaves
either the previous checkpoint or the new one, never half of one; `list_checkpoints` ignores temp folders.

Each checkpoint also holds `run.json` (the run_id of the run folder's marker, see `clipdistill.runfolder`):
listing, pruning and `--resume latest` only see the checkpoints of the run the folder's marker names.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from clipdistill.errors import UserError
from clipdistill.runfolder import adopted, run_id_of
from clipdistill.safeload import load_object, load_tensors, save_tensors

CKPT_DIR, WEIGHTS, STATE, RUN_INFO = "checkpoints", "model.safetensors", "state.pt", "run.json"
PREFIX = "step_"
FOLDER_RUN = "folder"  # run_id argument default: the run named by the run folder's marker (None: no marker)


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
                    counts: dict[str, int] | None = None, run_id: str | None = FOLDER_RUN,
                    rank_rngs: list[dict[str, Any]] | None = None) -> Path:
    """`counts`: the run's counts so far over all ranks (e.g. dropped reads per reason), restored on resume.
    `rank_rngs`: every DDP rank's RNG state (index = rank), so each rank's random streams continue exactly."""
    owner = run_id  # whose checkpoints the listing and pruning below see
    run_id = run_id_of(run_dir) if run_id == FOLDER_RUN else run_id
    final = step_dir(run_dir, pos.step)
    tmp = final.with_name(f".tmp_{final.name}_{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    state = {"step": pos.step, "epoch": pos.epoch, "batch_in_epoch": pos.batch_in_epoch,
             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
             "rng": rng_state(), "counts": dict(counts or {}), "rng_ranks": list(rank_rngs or [])}
    try:
        tmp.mkdir(parents=True)
        save_tensors(module_state(modules), tmp / WEIGHTS)  # the umask's mode, not safetensors' 0600
        torch.save(state, tmp / STATE)
        (tmp / RUN_INFO).write_text(json.dumps({"run_id": run_id, "step": pos.step}))
        for f in (tmp / WEIGHTS, tmp / STATE):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a failed write as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        kept = list_checkpoints(run_dir, owner)
        raise UserError(f"could not write checkpoint {final.name} ({e}); nothing of it was kept. Last good "
                        f"checkpoint: {kept[-1] if kept else 'none'}. Free space, then --resume latest") from None
    if final.exists():  # same step saved twice (e.g. resumed right at the end): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune(run_dir, keep_last, owner)
    return final


def checkpoint_run_id(ckpt: Path) -> str | None:
    try:
        return json.loads((Path(ckpt) / RUN_INFO).read_text()).get("run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def list_checkpoints(run_dir: Path, run_id: str | None = FOLDER_RUN) -> list[Path]:
    """Complete checkpoints, oldest first. `run_id`: only that run's (default: the run the folder's marker
    names; None: every complete one, for folders without a marker)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    legacy = False  # an adopted folder's checkpoints from before run ids are its run's
    if run_id == FOLDER_RUN:
        run_id, legacy = run_id_of(run_dir), adopted(run_dir)
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
            and (p / WEIGHTS).is_file() and (p / STATE).is_file()
            and (run_id is None or checkpoint_run_id(p) in ((run_id, None) if legacy else (run_id,)))]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def prune(run_dir: Path, keep_last: int, run_id: str | None = FOLDER_RUN) -> None:
    """Drop this run's older checkpoints; another run's never (they are not listed)."""
    for old in list_checkpoints(run_dir, run_id)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """`None` -> fresh start; `latest` -> newest complete checkpoint of run_dir (none yet = fresh); else a path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)  # this run's only (the folder's marker names it)
        return found[-1] if found else None
    path = Path(resume)
    if not ((path / WEIGHTS).is_file() and (path / STATE).is_file()):
        raise UserError(f"--resume {resume}: not a checkpoint folder (needs {WEIGHTS} and {STATE})")
    return path


def check_fits(path: Path, modules: dict[str, nn.Module]) -> None:
    """Refuse a checkpoint whose tensors (names, shapes) do not fit `modules`, reading only the safetensors
    header: a resume with a config edited to another architecture stops here, before anything is written."""
    try:
        with safe_open(str(Path(path) / WEIGHTS), framework="pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise UserError(f"{path}: unreadable checkpoint weights ({e})") from None
    want = {f"{name}.{k}": tuple(v.shape) for name, m in modules.items() for k, v in m.state_dict().items()}
    missing = [k for k in want if k not in saved]
    unexpected = [k for k in saved if k not in want and k.split(".", 1)[0] in modules]
    shapes = [f"{k} {saved[k]} vs {want[k]}" for k in want if k in saved and saved[k] != want[k]]
    if missing or unexpected or shapes:
        parts = [f"{len(shapes)} shape(s) differ ({'; '.join(shapes[:3])})" if shapes else "",
                 f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else ""]
        raise UserError(f"--resume {path}: the checkpoint does not fit the model this config builds: "
                        f"{', '.join(p for p in parts if p)} (checkpoint shape vs config's). Was the architecture "
                        "changed? Resume with the run's own config.yaml, or start a new run in another --out")


def load_checkpoint(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None, rank: int = 0, world_size: int = 1,
                    ) -> tuple[Position, dict[str, Any] | None, dict[str, int]]:
    """Restore weights, optimizer and scaler in place; returns the position, the RNG state of `rank` to apply
    once the data iterator has been rebuilt (so building it does not shift the random streams; None when the
    checkpoint holds none for this rank: written by another number of processes, or before ranks were saved)
    and the saved counts (empty for checkpoints written before they were saved)."""
    check_fits(path, modules)
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
    ranks = state.get("rng_ranks") or []
    rng = ranks[rank] if len(ranks) == world_size > 1 else state["rng"] if rank == 0 else None
    return Position(state["step"], state["epoch"], state["batch_in_epoch"]), rng, state.get("counts", {})
