"""SIGKILL `clipdistill distill` at three exact points, then `--resume latest`: the final weights equal an
uninterrupted run bitwise (CPU), and a checkpoint torn mid-write leaves the previous one intact and loadable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from rel_cases import case
from rel_helpers import HERE, caption, cli, png_bytes, write_pairs

from clipdistill.safeload import load_tensors
from clipdistill.train.checkpoint import list_checkpoints, resolve_resume

FAULTY = HERE / "faulty_cli.py"
# 32 pairs / batch 8 = 4 steps per epoch, 2 epochs; checkpoints every 3 steps do not line up with epochs
TRAIN = {"epochs": 2, "lr": 1e-3, "save_every": 3, "keep_last": 2, "progress": False, "tensorboard": False,
         "device": "cpu", "warmup_steps": 2}


def write_config(path, pairs, num_workers: int = 0) -> str:
    cfg = {"student": {"model": "open_clip:cd-student-xs-32"},
           "teacher": {"mode": "online", "models": ["open_clip:cd-student-xs-32"]},
           "data": {"source": str(pairs), "batch_size": 8, "num_workers": num_workers},
           "loss": {"clip": {}, "fd": {}}, "train": TRAIN}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def reference(pairs, tmp_path_factory):
    """The uninterrupted run, once for all kill points."""
    root = tmp_path_factory.mktemp("ref")
    proc = cli("distill", write_config(root / "cfg.yaml", pairs), "--out", str(root / "run"))
    assert proc.returncode == 0, proc.stderr
    return root / "run"


def killed_then_resumed(tmp_path, pairs, fault: str, num_workers: int = 0):
    cfg, run = write_config(tmp_path / "cfg.yaml", pairs, num_workers), tmp_path / "run"
    killed = subprocess.run([sys.executable, str(FAULTY), fault, "distill", cfg, "--out", str(run)],
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == -9, killed.stderr  # really SIGKILLed, not a clean exit
    assert not (run / "model.safetensors").exists()
    before = [p.name for p in list_checkpoints(run)]
    yield before
    resumed = cli("distill", cfg, "--out", str(run), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    yield run


def assert_bitwise_equal(run, reference) -> None:
    for rel in ("model.safetensors", "checkpoints/step_0000008/model.safetensors"):
        got, want = load_tensors(run / rel), load_tensors(reference / rel)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (rel, k)


@case("kill", "SIGKILL `distill` inside an optimizer step (after backward, before the update), epoch 2",
      "`--resume latest` restarts from the last checkpoint; final weights bitwise equal to an uninterrupted run")
def test_kill_mid_step(tmp_path, pairs, reference):
    steps = killed_then_resumed(tmp_path, pairs, "kill-mid-step:7")
    assert next(steps) == ["step_0000003", "step_0000006"]
    assert_bitwise_equal(next(steps), reference)


@case("kill", "SIGKILL `distill` between checkpoints in the middle of an epoch",
      "resume replays from the checkpoint's data position; final weights bitwise equal")
def test_kill_mid_epoch(tmp_path, pairs, reference):
    steps = killed_then_resumed(tmp_path, pairs, "kill-mid-epoch:5")
    assert next(steps) == ["step_0000003"]
    assert_bitwise_equal(next(steps), reference)


@case("kill", "SIGKILL `distill` mid-epoch while 2 loader worker processes decode and augment",
      "resumed with the workers, final weights bitwise equal to the uninterrupted run without workers "
      "(augmentations are drawn per sample, not per worker)")
def test_kill_mid_epoch_with_loader_workers(tmp_path, pairs, reference):
    steps = killed_then_resumed(tmp_path, pairs, "kill-mid-epoch:5", num_workers=2)
    assert next(steps) == ["step_0000003"]
    assert_bitwise_equal(next(steps), reference)


@case("kill", "SIGKILL `distill` while a checkpoint is being written (`state.pt` torn)",
      "the torn write stays in a hidden temp folder; the previous checkpoint is intact, loadable and used by "
      "`--resume latest`; final weights bitwise equal")
def test_kill_during_checkpoint_write(tmp_path, pairs, reference):
    steps = killed_then_resumed(tmp_path, pairs, "kill-in-ckpt:2")
    assert next(steps) == ["step_0000003"]
    run = tmp_path / "run"
    torn = list((run / "checkpoints").glob(".tmp_step_0000006_*"))
    assert len(torn) == 1 and (torn[0] / "state.pt").stat().st_size > 0
    latest = resolve_resume(run, "latest")
    assert latest.name == "step_0000003"
    assert load_tensors(latest / "model.safetensors")  # intact
    assert torch.load(latest / "state.pt", weights_only=True)["step"] == 3
    assert_bitwise_equal(next(steps), reference)


@case("kill", "SIGKILL `distill` in its second epoch on data with an undecodable image",
      "the resumed run's manifest counts the bad read of both epochs (`skipped_reads` carried in the checkpoint)")
def test_resumed_run_counts_the_killed_parts_dropped_reads(tmp_path):
    rows = [(f"k{i}", b"not a png" if i == 5 else png_bytes(i), caption(i)) for i in range(32)]
    data = write_pairs(tmp_path / "data", rows=rows)
    steps = killed_then_resumed(tmp_path, data, "kill-mid-step:7")
    assert next(steps) == ["step_0000003", "step_0000006"]  # the first epoch's bad read is behind step 6
    manifest = json.loads((next(steps) / "manifest.json").read_text())
    assert manifest["skipped_reads"] == {"undecodable_image": 2}  # once per epoch
