"""Helpers of the multi-process tests: spawned gloo ranks (tests/train, tests/reliability), a fault injected into
a training step, and the coloured-squares `distill` run that the torchrun tests (test_scaleout, distill's
siglip DDP test) repeat on 1 and 2 processes."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLORS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker: Callable, *args, world: int = 2) -> None:
    """`worker(rank, world, port, *args)` in `world` spawned processes meeting on one free port; fails when a
    rank is still running after 120 s (a hang) rather than waiting on it."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert not p.is_alive(), "a DDP worker hung"


def join_as_rank(rank: int, world: int, port: int) -> None:
    """A spawned worker's torch.distributed environment (what torchrun sets), on one thread."""
    import torch

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def before_call(task, call: int, fault: Callable[[], None]):
    """`task` with `fault()` run at the start of its `call`-th training step (1-based), e.g. a rank that
    vanishes or a signal it receives mid-step; the step then goes on as usual."""
    step = task.training_step

    def faulty(batch):
        if task.calls + 1 == call:
            fault()
        return step(batch)

    task.training_step = faulty
    return task


def write_square_pairs(d: Path) -> Path:
    """`d/pairs.csv`: 32 images of a coloured square on grey (4 colours, shifted), captioned with the colour."""
    from PIL import Image, ImageDraw

    rows = ["key,image,caption"]
    for i in range(32):
        name = list(COLORS)[i % 4]
        im = Image.new("RGB", (32, 32), (128, 128, 128))
        ImageDraw.Draw(im).rectangle([4 + i % 8, 4, 20 + i % 8, 20], fill=COLORS[name])
        im.save(d / f"{i}.png")
        rows.append(f"k{i},{i}.png,a {name} square")
    (d / "pairs.csv").write_text("\n".join(rows) + "\n")
    return d / "pairs.csv"


def distill_args(pairs: Path | str, out: Path, batch: int, *sets: str) -> list[str]:
    """`-m clipdistill distill` of the baseline config on `pairs`: the xs student, one epoch without warmup,
    no TensorBoard, a 60 s collective timeout; `sets` are further `--set` values."""
    base = [f"data.source={pairs}", f"data.batch_size={batch}", "student.model=open_clip:cd-student-xs-32",
            "train.epochs=1", "train.warmup_steps=0", "train.collective_timeout_s=60", "train.tensorboard=false"]
    return ["-m", "clipdistill", "distill", "configs/baseline.yaml", "--out", str(out),
            *[a for s in (*base, *sets) for a in ("--set", s)]]


def one_thread_env() -> dict:
    """The environment of a CLI subprocess run from the repository root: one OpenMP thread, `src` importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": "src"}


def run_ok(cmd: list[str]) -> str:
    """Run `cmd` from the repository root (5 min limit); assert it succeeded; its stdout."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=one_thread_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
