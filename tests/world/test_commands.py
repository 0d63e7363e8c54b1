import json

import pytest
from typer.testing import CliRunner

from clipdistill.cli import app
from clipdistill.data.tasks import open_task
from clipdistill.errors import ManifestMismatch
from clipdistill.splits import load_split, select


def test_splits_command_on_the_world(tiny_world, tmp_path):
    out = tmp_path / "splits"
    args = ["splits", "--task", "vcr", "--data", str(tiny_world / "tasks" / "vcr"), "--out", str(out),
            "--shift-by", "source", "--test-values", "movieclips"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["stage"] == "splits"
    train = open_task("vcr", tiny_world / "tasks" / "vcr", "train")
    doc = load_split(out / "shift_source.json", task="vcr", source_sha256=train.source_sha256())
    assert {train.meta[k]["source"] for k in doc["ids"]["test"]} == {"movieclips"}
    low = load_split(out / "lowshot.json", task="vcr", source_sha256=train.source_sha256())
    assert len(select(train.examples, low["ids"]["seed1"]["0.25"])) == 30
    val = open_task("vcr", tiny_world / "tasks" / "vcr", "val")
    with pytest.raises(ManifestMismatch, match="source.sha256"):
        load_split(out / "lowshot.json", task="vcr", source_sha256=val.source_sha256())


def test_commands_have_help_with_an_example():
    for verb in ("world", "splits"):
        res = CliRunner().invoke(app, [verb, "--help"])
        assert res.exit_code == 0 and "Example: clipdistill " + verb in res.output
