"""AdamW over every trainable module of a task, with weight decay only where it regularises."""

from __future__ import annotations

import torch
from torch import nn

from clipdistill.errors import UserError
from clipdistill.train.config import TrainConfig


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Gains, biases, scalars (incl. temperatures / logit_scale) and 1-d embeddings are not decayed (as open_clip)."""
    return param.ndim < 2 or "bias" in name or "logit_scale" in name


def _scale_of(name: str, lr_scale: dict[str, float]) -> tuple[str | None, float]:
    """(prefix, multiplier) of the longest `lr_scale` prefix that names `name` or a module above it."""
    hits = [p for p in lr_scale if name == p or name.startswith(p + ".")]
    best = max(hits, key=len, default=None)
    return best, (1.0 if best is None else lr_scale[best])


def param_groups(modules: dict[str, nn.Module], weight_decay: float,
                 lr_scale: dict[str, float] | None = None) -> list[dict]:
    """Decayed and undecayed groups, split further by `lr_scale` multiplier (each group keeps its own
    "lr_scale", which `set_lr` applies). Without `lr_scale` the groups are exactly [decay, no decay]."""
    lr_scale = lr_scale or {}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}  # as before
    used: set[str] = set()
    seen: set[int] = set()
    for prefix, module in modules.items():
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:  # shared parameters go in once
                continue
            seen.add(id(p))
            full = f"{prefix}.{name}"
            hit, scale = _scale_of(full, lr_scale)
            if hit is not None:
                used.add(hit)
            groups.setdefault((scale, not no_weight_decay(full, p)), []).append(p)
    unused = sorted(set(lr_scale) - used)
    if unused:
        raise UserError(f"train.lr_scale: {unused} name no trainable parameter; names start with one of "
                        f"{sorted(modules)}, as the keys of a checkpoint's model.safetensors do")
    order = sorted(groups, key=lambda k: (k[0] != 1.0, k[0], not k[1]))  # scale 1 first, decayed first
    return [{"params": groups[k], "weight_decay": weight_decay if k[1] else 0.0, "lr_scale": k[0]} for k in order]


FUSED_DEVICES = ("cpu", "cuda")


def build_optimizer(modules: dict[str, nn.Module], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the fused kernel where every parameter is a float tensor on CPU or CUDA (torch 2.13: one pass
    over all tensors instead of ~10 element-wise ops per tensor; 3.6x faster per step on a 8M-parameter student
    on CPU, benchmarks/RESULTS.md), else the multi-tensor (foreach) path. Both are deterministic."""
    groups = param_groups(modules, cfg.weight_decay, cfg.lr_scale)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             **({"fused": True} if fused else {"foreach": True}))
