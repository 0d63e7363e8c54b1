"""The loop's AdamW: the fused kernel on CPU, the same update as torch's per-tensor AdamW up to rounding."""

import torch
from torch import nn

from clipdistill.train import TrainConfig
from clipdistill.train.optim import build_optimizer, param_groups


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))


def test_fused_on_cpu_and_same_update_as_per_tensor_adamw():
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    a, b = _model(), _model()
    opt_a = build_optimizer({"m": a}, cfg)
    assert all(g["fused"] for g in opt_a.param_groups)
    opt_b = torch.optim.AdamW(param_groups({"m": b}, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                              foreach=False)
    assert not any(g["fused"] for g in opt_b.param_groups)
    x = torch.randn(32, 8)
    for _ in range(5):
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
        assert not torch.equal(p, _model().state_dict()[name])  # it moved


def test_non_float_parameters_fall_back_to_foreach():
    m = nn.Linear(2, 2).to(torch.complex64)
    opt = build_optimizer({"m": m}, TrainConfig())
    assert all(g["foreach"] and not g["fused"] for g in opt.param_groups)
