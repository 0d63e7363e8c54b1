"""A tiny task and data for loop tests: a linear regressor with dropout and noise (so RNG restore matters)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

N, DIM = 64, 8


def toy_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, DIM, generator=g)
    return x, x @ torch.randn(DIM, 1, generator=g) + 0.1


def make_factory(batch: int, rank: int = 0, world: int = 1, seed: int = 0):
    """Order from (seed, epoch); rank r takes every world-th sample of each global batch (DDP sharding)."""
    x, y = toy_data()

    def factory(epoch: int, start_step: int = 0):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        global_batch = batch * world
        for b in range(start_step, N // global_batch):
            idx = order[b * global_batch:(b + 1) * global_batch][rank::world]
            yield {"x": x[idx], "y": y[idx]}

    return factory


class ToyTask:
    """Separable loss (per-sample mean). `noisy` adds dropout + torch/numpy/python randomness."""

    def __init__(self, noisy: bool = False, nan_at_call: int | None = None, crash_at_call: int | None = None):
        torch.manual_seed(123)
        self.net = nn.Sequential(nn.Linear(DIM, 16), nn.Dropout(0.2 if noisy else 0.0), nn.Linear(16, 1))
        self.scale = nn.Module()
        self.scale.logit_scale = nn.Parameter(torch.zeros(()))
        self.noisy, self.nan_at_call, self.crash_at_call, self.calls = noisy, nan_at_call, crash_at_call, 0

    def trainable(self) -> dict[str, nn.Module]:
        return {"net": self.net, "loss": self.scale}

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.crash_at_call == self.calls:
            raise KeyboardInterrupt("simulated crash")
        pred = self.net(batch["x"]) * self.scale.logit_scale.exp()
        if self.noisy:
            pred = pred + 0.01 * torch.randn_like(pred) + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        mse = ((pred - batch["y"]) ** 2).mean()
        if self.nan_at_call == self.calls:
            mse = mse * float("nan")
        return {"loss": mse, "mse": mse}


def weights(task: ToyTask) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().clone() for n, m in task.trainable().items() for k, v in m.state_dict().items()}



def ddp_worker(rank: int, world: int, port: int, out_dir: str, die_at_call: int | None = None) -> None:
    """One DDP rank (spawned): trains on its shard; rank 0 saves the weights, every rank writes its outcome."""
    import os
    from pathlib import Path

    import clipdistill  # noqa: F401
    from clipdistill.errors import UserError
    from clipdistill.train import TrainConfig, fit, init_distributed, shutdown
    from ddp_helpers import before_call, join_as_rank

    join_as_rank(rank, world, port)
    task = ToyTask()
    if die_at_call is not None and rank == 1:
        before_call(task, die_at_call, lambda: os._exit(3))  # a peer that vanishes without a goodbye
    cfg = TrainConfig(lr=0.05, epochs=2, progress=False, tensorboard=False, save_every=100, device="cpu",
                      collective_timeout_s=10)
    outcome = "ok"
    try:
        fit(task, make_factory(8, rank, world), cfg, Path(out_dir) / "run")
        if rank == 0:
            torch.save(weights(task), Path(out_dir) / "ddp_weights.pt")
        shutdown(init_distributed("cpu", 10))
    except UserError as e:
        outcome = f"UserError: {e}"
    (Path(out_dir) / f"outcome{rank}.txt").write_text(outcome)
