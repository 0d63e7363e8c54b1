"""NaN / inf optimiser settings, and a warmup that outlasts the run."""

from __future__ import annotations

import json

import pytest
from rel_cases import case, param_cases
from rel_helpers import run_main, tiny_distill_config

BAD_OPTIM = param_cases("config", "test_bad_train_config.py::test_non_finite_optimiser_setting_is_refused", [
    ("eps-nan", "`train.eps=.nan` (AdamW divides by sqrt(v) + eps: every weight NaN at step 1)",
     "`train.eps: Input should be a finite number` (exit 2, nothing trained)", ("train.eps=.nan", "train.eps")),
    ("betas-nan", "`train.betas=[0.9, .nan]`", "`train.betas.1: Input should be a finite number` (exit 2)",
     ("train.betas=[0.9, .nan]", "train.betas.1")),
    ("lr-inf", "`train.lr=inf`", "`train.lr: Input should be a finite number` (exit 2)", ("train.lr=inf", "train.lr")),
    ("beta-one", "`train.betas=[1.0, 0.98]` (AdamW's bias correction 1 - beta^t is 0: NaN weights)",
     "`train.betas.0: Input should be less than 1` (exit 2)", ("train.betas=[1.0, 0.98]", "train.betas.0")),
])


@pytest.mark.parametrize("bad", BAD_OPTIM)
def test_non_finite_optimiser_setting_is_refused(tmp_path, pairs, bad):
    override, field = bad
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs))
    code, out = run_main("distill", cfg, "--out", str(tmp_path / "run"), "--set", override)
    assert code == 2 and "Traceback" not in out and "error: invalid config" in out, out
    assert field in out, out
    assert "finite number" in out or "less than 1" in out, out
    assert not (tmp_path / "run").exists()


@case("config", "a preset's `warmup_steps: 100` on a run of 4 optimizer steps",
      "trains, and warns on stderr and in `manifest.json` (`schedule.warning`: warmup covers the whole run)")
def test_warmup_longer_than_the_run_is_warned(tmp_path, pairs):
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs), warmup_steps=100)
    with pytest.warns(UserWarning, match=r"warmup \(100 steps\) covers the whole run \(4 optimizer steps\)"):
        code, out = run_main("distill", cfg, "--out", str(tmp_path / "run"))
    assert code == 0, out
    schedule = json.loads((tmp_path / "run" / "manifest.json").read_text())["schedule"]
    assert schedule["total_steps"] == 4 and schedule["warmup_steps"] == 100
    assert "covers the whole run" in schedule["warning"]
