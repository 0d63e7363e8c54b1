"""Tiny data and subprocess helpers for the reliability suite (no network, everything built on the fly)."""

from __future__ import annotations

import csv
import io
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
REPO = HERE.parents[1]
COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 20), (200, 30, 200), (30, 200, 200)]
NAMES = ["red", "green", "blue", "yellow", "magenta", "cyan"]


def png_bytes(i: int, size: int = 64) -> bytes:
    im = Image.new("RGB", (size, size), COLORS[i % len(COLORS)])
    im.paste(COLORS[(i + 2) % len(COLORS)], (i % 40, i % 30, i % 40 + 16, i % 30 + 16))  # varied content
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def png16(value: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A 16-bit greyscale PNG (Pillow mode `I;16`) of one grey level."""
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; its pixels are never read once the size is refused."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def caption(i: int) -> str:
    return f"a {NAMES[i % len(NAMES)]} square with a {NAMES[(i + 2) % len(NAMES)]} patch"


def write_pairs(root: Path, n: int = 32, rows: list[tuple[str, bytes | None, str]] | None = None) -> Path:
    """`root/pairs.csv` (key,image,caption) over n good 64 px PNGs, or the given (key, image bytes, caption)
    rows (None bytes = the image file is not written)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = rows if rows is not None else [(f"k{i}", png_bytes(i), caption(i)) for i in range(n)]
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "image", "caption"])
        for key, data, text in rows:
            if data is not None:
                (root / "img" / f"{key}.png").write_bytes(data)
            w.writerow([key, f"img/{key}.png", text])
    return root / "pairs.csv"


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(keys: range) -> list[tuple[str, bytes]]:
    return [m for i in keys for m in ((f"{i:06d}.png", png_bytes(i)), (f"{i:06d}.txt", caption(i).encode()))]


def cli(*args: str, timeout: float = 240, script: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m clipdistill ARGS` (or `python SCRIPT ARGS`) in a subprocess; output captured as text."""
    head = [str(script)] if script else ["-m", "clipdistill"]
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def assert_clear_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """A user-facing refusal: exit 2, `error: ...` naming the problem, and no Python traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "error:" in proc.stderr and "Traceback" not in out, out
    for n in needles:
        assert n in out, (n, out)


def assert_refused(result: tuple[int, str], *needles: str) -> None:
    """A refusal as `run_main` returns it: exit 2, no Python traceback, every needle in the output."""
    code, out = result
    assert code == 2 and "Traceback" not in out, out
    for n in needles:
        assert n in out, (n, out)


def assert_one_line_refusal(code: int, out: str, *needles: str) -> None:
    """`assert_refused`, and the output holds exactly one `error:` line."""
    assert_refused((code, out), *needles)
    assert sum(line.startswith("error:") for line in out.splitlines()) == 1, out


def synthetic_feature_store(root: Path) -> Path:
    """A one-shard `embed` feature store of 40 random unit vectors (8-d, float16) with its manifest."""
    from clipdistill.features.store import shard_name, write_shard
    from clipdistill.manifest import write_manifest

    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    write_shard(root, 0, [f"k{i}" for i in range(40)], {"image": x, "text": x}, None, {})
    write_manifest(root, "embed", teacher={"spec": "synthetic", "embed_dim": 8},
                   source={"spec": "synthetic", "fingerprint": "fp"}, shards=[shard_name(0)],
                   fields=["image", "text"], counts={"samples": 40, "skipped": 0, "shards": 1}, skips={})
    return root


def run_main(*args: str) -> tuple[int, str]:
    """The CLI entry point in this process (so monkeypatched faults apply): (exit code, stdout + stderr)."""
    from contextlib import redirect_stderr, redirect_stdout

    from clipdistill.cli import main

    buf = io.StringIO()
    argv, sys.argv = sys.argv, ["clipdistill", *args]
    code = 0
    try:
        with redirect_stdout(buf), redirect_stderr(buf):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, buf.getvalue()


def tiny_distill_config(path: Path, source: str, **train) -> str:
    """A 32 px student, no teacher, batch 8: the cheapest real `distill` run."""
    import yaml

    cfg = {"student": {"model": "open_clip:cd-student-xs-32"}, "data": {"source": source, "batch_size": 8},
           "train": {"epochs": 1, "save_every": 2, "progress": False, "tensorboard": False, "device": "cpu",
                     **train}}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)



def tiny_finetune_args(tmp_path: Path) -> tuple[list[str], Path]:
    """(`finetune` arguments for a 1-epoch baseline run on a tiny world, its out folder)."""
    import json

    sys.path.insert(0, str(Path(__file__).parent.parent / "td"))
    from td_helpers import TINY_STUDENT, build_tiny_world

    world = build_tiny_world(tmp_path / "world")
    out = tmp_path / "ft"
    config = Path(__file__).parents[2] / "configs" / "td" / "finetune_tiny.yaml"
    args = ["finetune", str(config), "--set", f"world={world}", "--set", "td.method=baseline", "--set",
            "fraction=0.1", "--set", f"out={out}", "--set", f"student={json.dumps(TINY_STUDENT)}", "--set",
            "train={epochs: 1, progress: false, tensorboard: false, device: cpu, save_every: 1}"]
    return args, out


def ddp_resume_worker(rank: int, world: int, port: int, out_dir: str, die_at_call: int | None,
                      resume: str | None) -> None:
    """One DDP rank of the toy task (tests/train/toy.py), checkpointing every 2 steps; rank 1 vanishes at its
    `die_at_call`-th step. Writes `outcome<rank>.txt`: `ok <steps trained here>` or the UserError."""
    import os

    import torch
    from toy import ToyTask, make_factory, weights

    from clipdistill.errors import UserError
    from clipdistill.train import TrainConfig, fit
    from ddp_helpers import before_call, join_as_rank

    join_as_rank(rank, world, port)
    task = ToyTask(crash_at_call=None)
    if rank == 1 and die_at_call is not None:
        before_call(task, die_at_call, lambda: os._exit(3))  # a peer that vanishes without a goodbye
    cfg = TrainConfig(lr=0.05, epochs=2, progress=False, tensorboard=False, save_every=2, device="cpu",
                      collective_timeout_s=5)
    try:
        fit(task, make_factory(8, rank, world), cfg, Path(out_dir) / "run", resume=resume)
        outcome = f"ok {task.calls}"
        if rank == 0:
            torch.save(weights(task), Path(out_dir) / "ddp_weights.pt")
    except UserError as e:
        outcome = f"UserError: {e}"
    (Path(out_dir) / f"outcome{rank}.txt").write_text(outcome)


def ddp_stop_worker(rank: int, world: int, port: int, out_dir: str, signal_at_call: int | None,
                    resume: str | None, tag: str) -> None:
    """One DDP rank of the toy task (save_every 100: only a stop writes a mid-run checkpoint); rank 1 alone sends
    itself SIGTERM inside its `signal_at_call`-th step. Writes `<tag>-outcome<rank>.txt`: `ok <steps trained
    here>` or `stopped <exit code> <message>`; rank 0 saves the final weights as `<tag>-weights.pt`."""
    import os
    import signal

    import torch
    from toy import ToyTask, make_factory, weights

    from clipdistill.errors import Interrupted
    from clipdistill.train import TrainConfig, fit
    from ddp_helpers import before_call, join_as_rank

    join_as_rank(rank, world, port)
    task = ToyTask(noisy=True)
    if rank == 1 and signal_at_call is not None:
        before_call(task, signal_at_call, lambda: os.kill(os.getpid(), signal.SIGTERM))
    cfg = TrainConfig(lr=0.05, epochs=2, progress=False, tensorboard=False, save_every=100, log_every=1,
                      device="cpu", collective_timeout_s=20)
    try:
        fit(task, make_factory(8, rank, world), cfg, Path(out_dir) / f"{tag}-run", resume=resume)
        outcome = f"ok {task.calls}"
        if rank == 0:
            torch.save(weights(task), Path(out_dir) / f"{tag}-weights.pt")
    except Interrupted as e:
        outcome = f"stopped {128 + e.signum} {e}"
    (Path(out_dir) / f"{tag}-outcome{rank}.txt").write_text(outcome)


def cli_rank_worker(rank: int, world: int, port: int, out_dir: str, *args: str) -> None:
    """One torchrun-like rank running the CLI in-process (`run_main(*args)`); writes `cli<rank>.json`: its exit
    code and everything it printed."""
    import json

    from ddp_helpers import join_as_rank

    join_as_rank(rank, world, port)
    code, out = run_main(*args)
    (Path(out_dir) / f"cli{rank}.json").write_text(json.dumps({"code": code, "out": out}))
