"""Subprocess entry for the kill-and-resume test: `python run_toy.py RUN_DIR [--resume latest]`."""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyTask, make_factory  # noqa: E402

import clipdistill  # noqa: E402, F401
from clipdistill.train import TrainConfig, fit  # noqa: E402

STEPS = 24


class SlowTask(ToyTask):
    def training_step(self, batch):
        time.sleep(0.05)  # leaves the test time to kill the process mid-run
        return super().training_step(batch)


def config() -> TrainConfig:
    return TrainConfig(lr=0.05, steps=STEPS, warmup_steps=3, save_every=2, keep_last=2, progress=False,
                       tensorboard=False, grad_clip=1.0)


if __name__ == "__main__":
    torch.set_num_threads(1)
    resume = sys.argv[3] if len(sys.argv) > 3 else None
    fit(SlowTask(noisy=True), make_factory(16), config(), sys.argv[1], resume=resume)
