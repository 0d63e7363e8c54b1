"""SIGKILL a `protocol` sweep while a cell trains, rerun it: the same results, and no finished cell redone."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from rel_cases import case
from rel_helpers import HERE, cli

sys.path.insert(0, str(HERE.parent / "td"))
from td_helpers import TINY_STUDENT, build_tiny_world  # noqa: E402

from clipdistill.td.protocol import ProtocolConfig, run_protocol  # noqa: E402


def protocol_config(root, out) -> dict:
    world = build_tiny_world(root / "world")
    return {"world": str(world), "tasks": [{"name": "vqa", "kind": "vqa", "folder": "tasks/vqa"}],
            "fractions": [0.25], "seeds": [0], "full": False, "methods": ["baseline", "naive", "clip_td"],
            "teacher": {"models": ["open_clip:cd-student-xs-32"]}, "batch_size": 8, "out": str(out),
            "student": TINY_STUDENT,
            "train": {"epochs": 1, "lr": 3e-3, "progress": False, "tensorboard": False, "device": "cpu"}}


@case("kill", "SIGKILL a `protocol` sweep while its 3rd cell trains, then rerun the same command",
      "the 2 finished cells are skipped (their results untouched), the killed cell runs again from scratch; "
      "`rows.json` equals an uninterrupted sweep's")
def test_kill_protocol_sweep_then_rerun(tmp_path):
    cfg = protocol_config(tmp_path, tmp_path / "killed")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    killed = subprocess.run([sys.executable, str(HERE / "faulty_cli.py"), "kill-cell:3", "protocol",
                             str(tmp_path / "p.yaml")], capture_output=True, text=True, timeout=240)
    assert killed.returncode == -9, killed.stderr
    cells = tmp_path / "killed" / "cells" / "vqa" / "f0.25-s0"
    done = {m: (cells / m / "result.json").stat().st_mtime_ns for m in ("baseline", "naive")}
    assert not (cells / "clip_td" / "result.json").exists() and not (tmp_path / "killed" / "rows.json").exists()

    again = cli("protocol", str(tmp_path / "p.yaml"))
    assert again.returncode == 0, again.stderr
    assert "skip (done) cells/vqa/f0.25-s0/baseline" in again.stdout
    assert "skip (done) cells/vqa/f0.25-s0/naive" in again.stdout and "run cells/vqa/f0.25-s0/clip_td" in again.stdout
    assert {m: (cells / m / "result.json").stat().st_mtime_ns for m in done} == done

    reference = run_protocol(ProtocolConfig(**{**cfg, "out": str(tmp_path / "ref")}), progress=lambda s: None)
    assert json.loads((tmp_path / "killed" / "rows.json").read_text()) == reference["rows"]


@case("stop", "SIGTERM reaches a `protocol` sweep inside the 1st optimizer step of its 2nd cell",
      "the step finishes, that cell's checkpoint is written, exit 143 saying to rerun the same command; the "
      "rerun skips the finished cell and continues the stopped one from its checkpoint; `rows.json` equals an "
      "uninterrupted sweep's")
def test_sigterm_protocol_mid_cell_then_rerun(tmp_path):
    cfg = protocol_config(tmp_path, tmp_path / "ref")
    reference = run_protocol(ProtocolConfig(**cfg), progress=lambda s: None)
    first = tmp_path / "ref" / "cells" / "vqa" / "f0.25-s0" / "baseline" / "metrics.jsonl"
    per_cell = json.loads(first.read_text().splitlines()[-1])["step"]  # optimizer steps of one cell
    assert per_cell >= 2
    cfg["out"] = str(tmp_path / "stopped")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    stopped = subprocess.run([sys.executable, str(HERE / "faulty_cli.py"), f"sigterm-mid-step:{per_cell + 1}",
                              "protocol", str(tmp_path / "p.yaml")], capture_output=True, text=True, timeout=240)
    assert stopped.returncode == 143, stopped.stderr
    assert f"stopped by SIGTERM after optimizer step 1 of {per_cell}" in stopped.stderr, stopped.stderr
    assert f"Continue with: clipdistill protocol {tmp_path / 'p.yaml'}" in stopped.stderr
    cells = tmp_path / "stopped" / "cells" / "vqa" / "f0.25-s0"
    assert (cells / "baseline" / "result.json").is_file() and not (cells / "naive" / "result.json").exists()
    assert (cells / "naive" / "checkpoints" / "step_0000001").is_dir()

    again = cli("protocol", str(tmp_path / "p.yaml"))
    assert again.returncode == 0, again.stderr
    assert "skip (done) cells/vqa/f0.25-s0/baseline" in again.stdout
    # resumed, not retrained: a fresh start (save_every 100) would have left only the final step's checkpoint
    assert (cells / "naive" / "checkpoints" / "step_0000001").is_dir()
    assert json.loads((tmp_path / "stopped" / "rows.json").read_text()) == reference["rows"]
