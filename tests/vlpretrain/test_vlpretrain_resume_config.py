"""`vlpretrain --resume` with changed objectives / steps keeps the config the run was trained under."""

from __future__ import annotations

import json

import yaml
from vlp_helpers import cli, tiny_config

from clipdistill.train.checkpoint import list_checkpoints


def test_resume_keeps_each_earlier_config(vlp_world, tmp_path):
    cfg = tiny_config(tmp_path / "cfg.yaml", f"world:{vlp_world}", train={"steps": 2})
    out = tmp_path / "run"
    run = cli("vlpretrain", str(cfg), "--out", str(out))
    assert run.returncode == 0, run.stderr
    first = (out / "config.yaml").read_bytes()
    before = sorted(p.name for p in out.iterdir())

    same = cli("vlpretrain", str(cfg), "--out", str(out), "--resume", "latest")
    assert same.returncode == 0 and "warning: resumed with a config" not in same.stderr, same.stderr
    assert (out / "config.yaml").read_bytes() == first and sorted(p.name for p in out.iterdir()) == before

    edited = cli("vlpretrain", str(cfg), "--out", str(out), "--resume", "latest", "--set", "train.steps=4",
                 "--set", "objectives.itc.weight=0.25")
    assert edited.returncode == 0, edited.stderr
    assert list_checkpoints(out)[-1].name == "step_0000004"
    warning = [line for line in edited.stderr.splitlines() if "warning: resumed with a config" in line]
    assert len(warning) == 1 and "in objectives.itc.weight, train.steps;" in warning[0], edited.stderr
    assert (out / "config.before-resume-1.yaml").read_bytes() == first
    second = (out / "config.yaml").read_bytes()
    assert yaml.safe_load(second)["objectives"]["itc"]["weight"] == 0.25

    again = cli("vlpretrain", str(cfg), "--out", str(out), "--resume", "latest", "--set", "train.steps=6",
                "--set", "objectives.itc.weight=0.25")
    assert again.returncode == 0 and "in train.steps;" in again.stderr, again.stderr
    assert (out / "config.before-resume-1.yaml").read_bytes() == first
    assert (out / "config.before-resume-2.yaml").read_bytes() == second
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["file"], e["changed"]) for e in manifest["config_history"]] == [
        ("config.before-resume-1.yaml", ["objectives.itc.weight", "train.steps"]),
        ("config.before-resume-2.yaml", ["train.steps"])]
    assert manifest["probes"]  # written at the end of the run, with the history kept
