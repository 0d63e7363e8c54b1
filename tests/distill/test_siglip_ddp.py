"""`distill` with the siglip term under torchrun: 2 processes on half-batches end where 1 process on the whole
batch does (the ring exchange's gradients + DDP's average), with DDP's default find_unused_parameters=False
although a CLIP student's own logit scale is read by no term."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from clipdistill.safeload import load_tensors

REPO = Path(__file__).resolve().parents[2]
COLORS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}


def _pairs(d: Path) -> Path:
    rows = ["key,image,caption"]
    for i in range(32):
        name = list(COLORS)[i % 4]
        im = Image.new("RGB", (32, 32), (128, 128, 128))
        ImageDraw.Draw(im).rectangle([4 + i % 8, 4, 20 + i % 8, 20], fill=COLORS[name])
        im.save(d / f"{i}.png")
        rows.append(f"k{i},{i}.png,a {name} square")
    (d / "pairs.csv").write_text("\n".join(rows) + "\n")
    return d / "pairs.csv"


def _distill(head: list[str], pairs: Path, out: Path, batch: int) -> None:
    sets = [f"data.source={pairs}", f"data.batch_size={batch}", "student.model=open_clip:cd-student-xs-32",
            "train.epochs=1", "train.warmup_steps=0", "train.collective_timeout_s=60", "train.tensorboard=false",
            "train.progress=false", "loss={siglip: {}}"]
    cmd = [sys.executable, *head, "-m", "clipdistill", "distill", "configs/baseline.yaml", "--out", str(out),
           *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": "src"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_siglip_on_two_processes_equals_one(tmp_path):
    pairs = _pairs(tmp_path)
    _distill([], pairs, tmp_path / "one", 16)
    _distill(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], pairs, tmp_path / "two", 8)
    one, two = (load_tensors(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    assert set(one) == set(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    ckpt = sorted((tmp_path / "two" / "checkpoints").iterdir())[-1] / "model.safetensors"
    assert load_tensors(ckpt)["loss.sigmoid_bias"].item() != -10.0  # the loss-owned bias trained
