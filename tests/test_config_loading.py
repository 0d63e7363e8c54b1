"""Typed configs: YAML + --set overrides, unknown keys named with the closest valid key, safe YAML only."""

from __future__ import annotations

import pytest
from pydantic import model_validator

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


class Checked(StrictModel):
    name: str
    optim: Optim = Optim()
    sizes: list[int] = []

    @model_validator(mode="after")
    def _consistent(self):
        if self.name == "both" and self.optim.lr > 1:
            raise ValueError("name 'both' needs optim.lr <= 1")
        return self


def test_errors_are_one_line_each_and_never_echo_the_config(tmp_path):
    p = tmp_path / "c.yaml"
    secret = "x" * 50  # a value of the config that no error is about
    p.write_text(f"name: 3\noptim: {{lr: fast, warmup_steps: [1, 2]}}\nsizes: [1, two]\nnote_{secret}: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Checked, p)
    lines = str(e.value).splitlines()
    assert lines[0] == f"invalid config ({p}), 5 problems:"
    assert lines[1:] == ["  name: Input should be a valid string (got 3)",
                         "  optim.lr: Input should be a valid number, unable to parse string as a number (got 'fast')",
                         "  optim.warmup_steps: Input should be a valid integer (got [1, 2])",
                         "  sizes.1: Input should be a valid integer, unable to parse string as an integer (got 'two')",
                         f"  unknown key 'note_{secret}' (valid here: name, optim, sizes)"]
    # one problem: one line; a missing key and a model-level refusal name no value (their input is a whole mapping)
    for overrides, line in ((["optim.lr=0.1"], "invalid config (--set): name: required key missing"),
                            (["name=both", "optim.lr=2"], "invalid config (--set): top level: name 'both' needs "
                                                         "optim.lr <= 1")):
        with pytest.raises(ConfigError) as e:
            load_config(Checked, None, overrides)
        assert str(e.value) == line
    many = [f"k{i}=1" for i in range(20)]
    with pytest.raises(ConfigError) as e:
        load_config(Checked, None, ["name=a", *many])
    lines = str(e.value).splitlines()
    assert lines[0].endswith("20 problems:") and len(lines) == 1 + 8 + 1 and lines[-1] == "  ... and 12 more"


def test_every_shipped_preset_validates():
    """A broken preset would otherwise fail only when a user runs it."""
    from pathlib import Path

    import clipdistill
    from clipdistill.distill.config import DistillConfig
    from clipdistill.td.protocol import ProtocolConfig
    from clipdistill.td.runner import FinetuneConfig
    from clipdistill.vlpretrain.config import VLPretrainConfig

    kinds = {"protocol": ProtocolConfig, "finetune": FinetuneConfig, "vlpretrain": VLPretrainConfig}
    presets = sorted((Path(clipdistill.__file__).parent / "configs").rglob("*.yaml"))
    loaded = {p.stem: load_config(kinds.get(p.stem.split("_")[0], DistillConfig), p) for p in presets}
    assert {"baseline", "negclip", "clipkd", "tinyclip", "cid", "vlpretrain", "protocol_demo"} <= set(loaded)
    assert loaded["negclip"].data.hard_negatives == "swap" and set(loaded["negclip"].loss) == {"negclip"}


def test_every_experiment_config_validates():
    """The configs RESULTS.md's commands run (`experiments/`): protocol cells (td_*) and pretraining runs."""
    from pathlib import Path

    from clipdistill.td.protocol import ProtocolConfig
    from clipdistill.vlpretrain.config import VLPretrainConfig

    found = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
    kinds = {"td": ProtocolConfig, "vlpretrain": VLPretrainConfig}
    loaded = {p.stem: load_config(kinds[p.stem.split("_")[0]], p) for p in found}
    assert {"td_default_vilt", "vlpretrain_default"} <= set(loaded)
    assert loaded["vlpretrain_default"].objectives.mlm.attribute_share == 0.5
