"""AdamW over every trainable module of a task, with weight decay only where it regularises."""

from __future__ import annotations

import torch
from torch import nn

from clipdistill.train.config import TrainConfig


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Gains, biases, scalars (incl. temperatures / logit_scale) and 1-d embeddings are not decayed (as open_clip)."""
    return param.ndim < 2 or "bias" in name or "logit_scale" in name


def param_groups(modules: dict[str, nn.Module], weight_decay: float) -> list[dict]:
    decay, keep = [], []
    seen: set[int] = set()
    for prefix, module in modules.items():
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:  # shared parameters go in once
                continue
            seen.add(id(p))
            (keep if no_weight_decay(f"{prefix}.{name}", p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_optimizer(modules: dict[str, nn.Module], cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(modules, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
