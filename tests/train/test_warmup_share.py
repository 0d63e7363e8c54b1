"""`train.warmup` (a share of the run) and the warning when warmup covers the whole run."""

import math

import pytest

from clipdistill.config import build_config
from clipdistill.errors import ConfigError
from clipdistill.train import TrainConfig


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
