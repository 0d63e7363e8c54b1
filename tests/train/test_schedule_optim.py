import math

import pytest
import torch
from torch import nn

from clipdistill.config import build_config
from clipdistill.errors import ConfigError, UserError
from clipdistill.train import TrainConfig
from clipdistill.train.optim import param_groups
from clipdistill.train.schedule import lr_factor, set_lr


def test_warmup_then_cosine_hand_values():
    # 2 warmup steps of 10: 1/2, 2/2, then cosine over 8 steps from 1 to 0
    assert lr_factor(0, 10, 2) == 0.5
    assert lr_factor(1, 10, 2) == 1.0
    assert lr_factor(2, 10, 2) == 1.0
    assert lr_factor(6, 10, 2) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_factor(10, 10, 2) == pytest.approx(0.0)
    assert lr_factor(6, 10, 2, min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(3, 10, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))


def test_no_weight_decay_for_gains_biases_and_logit_scale():
    m = nn.Module()
    m.proj = nn.Linear(4, 4)
    m.ln = nn.LayerNorm(4)
    m.logit_scale = nn.Parameter(torch.ones(()))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    decay, keep = param_groups({"student": m, "teacher": frozen}, 0.1)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert {id(p) for p in keep["params"]} == {id(m.proj.bias), id(m.ln.weight), id(m.ln.bias), id(m.logit_scale)}
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0


def test_config_refuses_unknown_key_and_bad_warmup():
    with pytest.raises(ConfigError, match="accum_steps"):
        build_config(TrainConfig, {"accum_step": 2})
    with pytest.raises(ConfigError, match="warmup_steps"):
        build_config(TrainConfig, {"steps": 3, "warmup_steps": 5})


def test_lr_scale_groups_by_longest_prefix_and_set_lr_applies_it():
    m = nn.Module()
    m.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    m.head = nn.Linear(4, 2)
    groups = param_groups({"student": m}, 0.1, {"student.blocks": 0.1, "student.blocks.1": 0.5})
    by = {(g["lr_scale"], g["weight_decay"]): {id(p) for p in g["params"]} for g in groups}
    assert by == {(1.0, 0.1): {id(m.head.weight)}, (1.0, 0.0): {id(m.head.bias)},
                  (0.1, 0.1): {id(m.blocks[0].weight)}, (0.1, 0.0): {id(m.blocks[0].bias)},
                  (0.5, 0.1): {id(m.blocks[1].weight)}, (0.5, 0.0): {id(m.blocks[1].bias)}}
    opt = torch.optim.AdamW(groups, lr=1.0)
    assert set_lr(opt, 2e-3, 0.5) == pytest.approx(1e-3)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-4, 1e-4, 5e-4, 5e-4, 1e-3, 1e-3])
    # a prefix must end at a name boundary: "student.block" names nothing
    with pytest.raises(UserError, match=r"\['student.block'\] name no trainable parameter"):
        param_groups({"student": m}, 0.1, {"student.block": 0.1})


def test_config_refuses_a_non_positive_lr_scale():
    with pytest.raises(ConfigError, match="lr_scale"):
        build_config(TrainConfig, {"lr_scale": {"student": 0.0}})
