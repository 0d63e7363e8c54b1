"""Helpers for td tests: the tiny embedded world (real VQA v2 / SNLI-VE / VCR file formats) and a stand-in
training loop."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_STUDENT = {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "heads": 2, "context_length": 16}
TASKS = {"vqa": "tasks/vqa", "snli_ve": "tasks/snli_ve", "vcr": "tasks/vcr"}  # kind -> folder in the world


def build_tiny_world(root: Path) -> Path:
    """`clipdistill world --size tiny` (a few seconds): ~60-135 examples per task split."""
    from clipdistill.world.build import build_world

    build_world(root, "tiny", seed=0)
    return root


def open_examples(world: Path, kind: str, split: str = "train") -> list:
    from clipdistill.data.tasks import open_task

    return open_task(kind, world / TASKS[kind], split).examples


def stand_in_fit(task, loader_factory, train_cfg, run_dir):
    """Test-only stand-in for `clipdistill.train.fit` (same call shape) that keeps td tests fast: Adam over
    `task.trainable()` for train_cfg["epochs"] epochs, no checkpoints or logs."""
    params = [p for m in task.trainable().values() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=train_cfg["lr"])
    for m in task.trainable().values():
        m.train()
    for epoch in range(train_cfg["epochs"]):
        for batch in loader_factory(epoch):
            loss = task.training_step(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run_dir
