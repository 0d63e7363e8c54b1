import json

import pytest
from td_helpers import stand_in_fit
from typer.testing import CliRunner

from clipdistill.errors import ManifestMismatch
from clipdistill.td.protocol import ProtocolConfig, run_protocol, summarise
from clipdistill.td.runner import nested_subset

TRAIN = {"epochs": 2, "lr": 3e-3}


def _cfg(tasksets, out, **kw):
    tasks = [{"name": k, "kind": k, "train": str(v["train"]), "val": str(v["val"])} for k, v in tasksets.items()]
    tasks[0]["shift_tests"] = {"style": str(tasksets["vqa"]["val"])}
    return ProtocolConfig(tasks=tasks, fractions=[0.5], seeds=[0], full=True, teacher="open_clip:cd-student-xs-32",
                          student={"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "heads": 2,
                                   "context_length": 16}, batch_size=8, out=str(out), **kw)


def test_tiny_protocol_end_to_end_and_resume(tasksets, tmp_path):
    cfg = _cfg(tasksets, tmp_path / "p")
    res = run_protocol(cfg, trainer=stand_in_fit, train_config=TRAIN, progress=lambda s: None)
    rows = res["rows"]
    assert {r["task"] for r in rows} == {"vqa", "snli_ve", "vcr"}
    assert {r["method"] for r in rows} == {"baseline", "naive", "clip_td"}
    assert {r["regime"] for r in rows} == {"low_shot", "full", "shift:style"}
    assert {r["metric"] for r in rows if r["task"] == "vcr"} == {"q_a", "qa_r", "q_ar"}
    assert all(0 <= r["value"] <= 100 for r in rows)
    assert set(rows[0]) == {"task", "kind", "regime", "fraction", "method", "seed", "metric", "value"}
    table = json.loads((tmp_path / "p" / "results.json").read_text())
    assert any(e["method"] == "clip_td" and "gain_abs" in e for e in table)
    assert "| vcr | full | 1 | q_ar | clip_td |" in (tmp_path / "p" / "results.md").read_text()
    run = tmp_path / "p" / "cells" / "vqa" / "f1-s0" / "clip_td"
    assert (run / "task_model.safetensors").is_file() and (run / "config.yaml").is_file()

    seen = []  # rerun: every cell is done, nothing trains
    again = run_protocol(cfg, trainer=None, train_config=TRAIN, progress=seen.append)
    assert all(s.startswith("skip") for s in seen) and again["rows"] == rows

    changed = _cfg(tasksets, tmp_path / "p", td={"lam": 0.25})
    with pytest.raises(ManifestMismatch, match="td.lam"):
        run_protocol(changed, trainer=stand_in_fit, train_config=TRAIN, progress=lambda s: None)


def test_summary_mean_std_and_gains():
    rows = [{"task": "t", "regime": "low_shot", "fraction": 0.1, "metric": "accuracy", "method": m, "seed": s,
             "value": v} for m, s, v in [("baseline", 0, 40.0), ("baseline", 1, 60.0), ("clip_td", 0, 55.0),
                                         ("clip_td", 1, 65.0)]]
    td = next(e for e in summarise(rows) if e["method"] == "clip_td")
    assert td["mean"] == 60.0 and td["std"] == pytest.approx(7.0710678)
    assert td["gain_abs"] == 10.0 and td["gain_rel_pct"] == pytest.approx(20.0)


def test_low_shot_subsets_are_nested_and_deterministic():
    keys = [f"k{i}" for i in range(200)]
    small, big = nested_subset(keys, 0.05, 1), nested_subset(keys, 0.25, 1)
    assert len(small) == 10 and len(big) == 50 and small < big
    assert nested_subset(keys, 0.05, 1) == small != nested_subset(keys, 0.05, 2)


def test_commands_have_help_with_example_and_bad_config_is_a_clear_error(tmp_path):
    from clipdistill.cli import app

    runner = CliRunner()
    for verb in ("finetune", "protocol"):
        r = runner.invoke(app, [verb, "--help"])
        assert r.exit_code == 0 and "Example: clipdistill " + verb in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: []\nteacher: open_clip:cd-student-xs-32\nseeds: [0]\nfractionz: [0.1]\n")
    r = runner.invoke(app, ["protocol", str(bad)])
    assert r.exit_code != 0 and "fractions" in str(r.exception)


def test_shipped_td_configs_validate():
    from pathlib import Path

    from clipdistill.config import load_config
    from clipdistill.td.runner import FinetuneConfig

    root = Path(__file__).parents[2] / "configs" / "td"
    assert load_config(FinetuneConfig, root / "finetune_tiny.yaml").td.method == "clip_td"
    assert load_config(ProtocolConfig, root / "protocol_tiny.yaml").methods == ["baseline", "naive", "clip_td"]
