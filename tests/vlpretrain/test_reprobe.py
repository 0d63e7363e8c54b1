"""experiments/vlpretrain_reprobe.py: a finished run re-probed into a new file gives the run's own probe figures,
and never writes into the run folder or over a file."""

from __future__ import annotations

import importlib.util
import json

import pytest
from vlp_helpers import REPO, cli, tiny_config

SCRIPT = REPO / "experiments" / "vlpretrain_reprobe.py"


def _script():
    spec = importlib.util.spec_from_file_location("vlpretrain_reprobe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def finished(vlp_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("reprobe")
    proc = cli("vlpretrain", str(tiny_config(root / "cfg.yaml", f"world:{vlp_world}")), "--out", str(root / "run"))
    assert proc.returncode == 0, proc.stderr
    return root / "run"


def test_reprobe_reproduces_the_runs_probes_and_adds_the_controls(finished, tmp_path, capsys):
    out = tmp_path / "r" / "reprobe.json"
    assert _script().main([str(finished), "--output", str(out), "--repeats", "2"]) == 0
    got = json.loads(out.read_text())
    want = json.loads((finished / "probes.json").read_text())["metrics"]
    assert got["metrics"]["itm"] == want["itm"]
    for kind, r in want["mlm"].items():
        assert got["metrics"]["mlm"][kind]["accuracy"] == r["accuracy"]
        assert got["metrics"]["mlm"][kind]["majority_share"] == r["majority_share"]
        if r["n"]:
            assert got["metrics"]["mlm"][kind]["prior_word"] is not None
    assert got["training_captions"] == 260  # the tiny world's 300 pairs less the 40 held out
    assert 0 <= got["training_masker"]["all"]["accuracy"] <= 1 and got["training_masker"]["all"]["targets"] > 0
    assert "other image" in capsys.readouterr().out


def test_reprobe_refuses_to_overwrite_or_write_into_the_run(finished, tmp_path, capsys):
    mod = _script()
    before = sorted(p.relative_to(finished) for p in finished.rglob("*"))
    taken = tmp_path / "taken.json"
    taken.write_text("keep")
    assert mod.main([str(finished), "--output", str(taken)]) == 2
    assert taken.read_text() == "keep"
    assert mod.main([str(finished), "--output", str(finished / "reprobe.json")]) == 2
    (tmp_path / "empty").mkdir()
    assert mod.main([str(tmp_path / "empty"), "--output", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "exists" in err[0] and "inside the run folder" in err[1] and "not a finished" in err[2]
    assert sorted(p.relative_to(finished) for p in finished.rglob("*")) == before
