from pathlib import Path

import pytest

from clipdistill.config import load_config
from clipdistill.distill.config import DistillConfig
from clipdistill.errors import ConfigError
from clipdistill.losses import LOSSES

PRESETS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["baseline", "cid", "clipkd", "tinyclip"])
def test_presets_validate_and_name_registered_losses(name):
    cfg = load_config(DistillConfig, PRESETS / f"{name}.yaml", ["train.lr=2e-4"])
    assert cfg.train.lr == 2e-4 and set(cfg.loss) <= set(LOSSES)
    assert (cfg.teacher.mode == "none") == (name == "baseline")


def test_teacher_mode_and_models_must_agree():
    with pytest.raises(ConfigError, match="ensemble takes 2"):
        load_config(DistillConfig, None, ["data.source=x.csv", "teacher.mode=ensemble", "teacher.models=[a]"])
    with pytest.raises(ConfigError, match="teacher.features"):
        load_config(DistillConfig, None, ["data.source=x.csv", "teacher.mode=cached"])
