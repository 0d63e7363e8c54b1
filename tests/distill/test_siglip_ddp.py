"""`distill` with the siglip term under torchrun: 2 processes on half-batches end where 1 process on the whole
batch does (the ring exchange's gradients + DDP's average), with DDP's default find_unused_parameters=False
although a CLIP student's own logit scale is read by no term."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from clipdistill.safeload import load_tensors
from ddp_helpers import distill_args, run_ok, write_square_pairs


def _distill(head: list[str], pairs: Path, out: Path, batch: int) -> None:
    run_ok([sys.executable, *head, *distill_args(pairs, out, batch, "train.progress=false", "loss={siglip: {}}")])


@pytest.mark.slow
def test_siglip_on_two_processes_equals_one(tmp_path):
    pairs = write_square_pairs(tmp_path)
    _distill([], pairs, tmp_path / "one", 16)
    _distill(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], pairs, tmp_path / "two", 8)
    one, two = (load_tensors(tmp_path / run / "model.safetensors") for run in ("one", "two"))
    assert set(one) == set(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    ckpt = sorted((tmp_path / "two" / "checkpoints").iterdir())[-1] / "model.safetensors"
    assert load_tensors(ckpt)["loss.sigmoid_bias"].item() != -10.0  # the loss-owned bias trained
