"""`train.warmup` (a share of the run) and the warning when warmup covers the whole run."""

import json
import math

import pytest
from toy import ToyTask, make_factory

from clipdistill.config import build_config
from clipdistill.errors import ConfigError
from clipdistill.train import TrainConfig, fit


def test_warmup_share_scales_with_the_run_and_replaces_warmup_steps():
    cfg = build_config(TrainConfig, {"warmup": 0.05, "warmup_steps": 100})
    assert cfg.warmup_for(1000) == 50 and cfg.warmup_for(40) == 2 and cfg.warmup_for(3) == 0
    assert cfg.warmup_warning(40) is None
    assert build_config(TrainConfig, {"warmup": 1.0}).warmup_for(7) == 7


def test_warmup_steps_unchanged_without_a_share():
    cfg = build_config(TrainConfig, {"warmup_steps": 100})
    assert cfg.warmup_for(4) == 100 and cfg.warmup_for(10_000) == 100
    assert cfg.warmup_warning(10_000) is None
    assert "covers the whole run (4 optimizer steps)" in cfg.warmup_warning(4)
    assert "covers the whole run (100 optimizer steps)" in cfg.warmup_warning(100)  # ramps to the last step
    assert build_config(TrainConfig, {}).warmup_warning(1) is None  # no warmup at all


@pytest.mark.parametrize("bad", [{"warmup": 1.5}, {"warmup": -0.1}, {"warmup": math.nan}, {"eps": 0.0},
                                 {"eps": math.inf}, {"weight_decay": math.nan}, {"lr_scale": {"student": math.inf}},
                                 {"grad_clip": math.inf}, {"min_lr_ratio": math.nan}, {"betas": [0.9, -0.1]}])
def test_out_of_range_schedule_and_optimiser_values_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        build_config(TrainConfig, bad)


def test_the_loop_ramps_over_the_share_of_its_own_length(tmp_path):
    # 64 samples / 16 per batch x 5 epochs = 20 steps; warmup 0.1 of them = 2 steps: lr 0.5x then 1x, then cosine
    cfg = build_config(TrainConfig, {"epochs": 5, "lr": 0.1, "warmup": 0.1, "warmup_steps": 100, "log_every": 1,
                                     "progress": False, "tensorboard": False})
    fit(ToyTask(), make_factory(16), cfg, tmp_path)
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lrs) == 20 and lrs[:3] == [0.05, 0.1, 0.1] and lrs[3] < 0.1 and lrs[-1] < 0.01
