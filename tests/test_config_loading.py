"""Typed configs: YAML + --set overrides, unknown keys named with the closest valid key, safe YAML only."""

from __future__ import annotations

import pytest

from clipdistill.config import StrictModel, load_config
from clipdistill.errors import ConfigError


class Optim(StrictModel):
    lr: float = 1e-3
    warmup_steps: int = 10


class Cfg(StrictModel):
    name: str = "run"
    optim: Optim = Optim()
    losses: dict[str, float] = {}


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\noptim:\n  lr: 0.01\n")
    cfg = load_config(Cfg, p, ["optim.warmup_steps=5", "losses.fd=2000", "name=b"])
    assert (cfg.name, cfg.optim.lr, cfg.optim.warmup_steps, cfg.losses) == ("b", 0.01, 5, {"fd": 2000.0})


def test_unknown_key_names_path_and_closest(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  warmup_step: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p)
    assert "optim.warmup_step" in str(e.value) and "did you mean 'optim.warmup_steps'" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'name'"):
        load_config(Cfg, None, ["nme=x"])


def test_wrong_type_names_field():
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(Cfg, None, ["optim.lr=fast"])


def test_yaml_object_tags_refused(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="tags"):
        load_config(Cfg, p)
    assert not (tmp_path / "pwned").exists()


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Cfg, None, ["optim.lr"])
