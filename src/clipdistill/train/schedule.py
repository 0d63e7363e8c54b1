"""Learning-rate schedule by optimizer step: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based) of `total`.

    Warmup ramps (step+1)/warmup so the very first step already moves; cosine runs over the rest.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, base_lr: float, factor: float) -> float:
    """Set every group's lr to base_lr * factor * its "lr_scale" (train.lr_scale); returns base_lr * factor."""
    lr = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
