"""SIGKILL a CPU run mid-training, resume it with `--resume latest`: the final weights are bitwise identical
to an uninterrupted run (data order from (seed, epoch) + position, RNG states restored)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from run_toy import config
from toy import ToyTask, make_factory, weights

from clipdistill.safeload import load_tensors
from clipdistill.train import fit
from clipdistill.train.checkpoint import list_checkpoints

SCRIPT = Path(__file__).with_name("run_toy.py")


def test_sigkill_then_resume_latest_is_bitwise_identical(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(run)])
    deadline = time.monotonic() + 60
    while not (run / "checkpoints" / "step_0000006").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "toy run ended or stalled before step 6"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(list_checkpoints(run)[-1].name.split("_")[1])
    assert killed_at < 24  # really interrupted
    subprocess.run([sys.executable, str(SCRIPT), str(run), "--resume", "latest"], check=True, timeout=120)

    ref = ToyTask(noisy=True)
    fit(ref, make_factory(16), config(), tmp_path / "ref")
    resumed = load_tensors(run / "checkpoints" / "step_0000024" / "model.safetensors")
    for k, v in weights(ref).items():
        assert torch.equal(resumed[k], v), k
