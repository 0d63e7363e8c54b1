"""Progress where there is no terminal: plain `stage step/total samples/s ETA` lines, flushed, at start, at the
configured interval and at the end (a log file, CI or SLURM would otherwise see nothing for minutes)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from clipdistill.progress import StageProgress, interval_seconds
from clipdistill.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).parent / "train"))
from toy import ToyTask, make_factory  # noqa: E402

LINE = re.compile(r"^progress: train (\d+)/(\d+) steps, [\d.]+ samples/s, ETA \d+:\d\d:\d\d")


def test_training_loop_prints_plain_lines_with_step_total_rate_and_eta(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIPDISTILL_PROGRESS_SECONDS", "0")
    cfg = TrainConfig(lr=0.05, epochs=2, progress=True, tensorboard=False, log_every=1)
    fit(ToyTask(), make_factory(16), cfg, tmp_path)  # 64 samples / 16 per step * 2 epochs = 8 steps
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "progress: train 0/8 steps, ETA ?"
    steps = [(int(m[1]), int(m[2])) for ln in lines if (m := LINE.match(ln))]
    assert steps == [(s, 8) for s in range(1, 9)], lines
    assert lines[-1].startswith("progress: train 8/8 steps") and "took 0:00:" in lines[-1]


def test_interval_limits_the_lines_and_the_end_is_always_printed(monkeypatch):
    monkeypatch.setenv("CLIPDISTILL_PROGRESS_SECONDS", "3600")
    out = io.StringIO()
    with StageProgress("embed", 100, unit="shards", stream=out) as p:
        for _ in range(100):
            p.advance(samples=10)
    lines = out.getvalue().splitlines()
    assert lines[0] == "progress: embed 0/100 shards, ETA ?"
    assert len(lines) == 2 and lines[1].startswith("progress: embed 100/100 shards, ") and "samples/s" in lines[1]


def test_unknown_total_has_no_eta_and_a_disabled_stage_prints_nothing(monkeypatch):
    monkeypatch.setenv("CLIPDISTILL_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    with StageProgress("stream", None, unit="batches", stream=out) as p:
        p.advance(3)
    assert "progress: stream 3/? batches" in out.getvalue() and "ETA" not in out.getvalue()
    quiet = io.StringIO()
    with StageProgress("rank 1", 5, enabled=False, stream=quiet) as p:
        p.advance()
    assert quiet.getvalue() == ""


def test_a_terminal_gets_rich_bar_not_plain_lines():
    out = io.StringIO()
    p = StageProgress("train", 4, stream=out, tty=True)
    p.advance()
    p.close()
    assert p._bar is not None and "progress:" not in out.getvalue()


def test_redirected_cli_stage_shows_where_it_is(tmp_path):
    """`clipdistill world > log`: the lines are in the pipe as they happen (flushed), with step/total and ETA."""
    env = {**os.environ, "CLIPDISTILL_PROGRESS_SECONDS": "0"}
    proc = subprocess.run([sys.executable, "-m", "clipdistill", "world", "--out", str(tmp_path / "w"), "--size",
                           "tiny"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("progress: world: pairs ")]
    total = int(re.match(r"progress: world: pairs 0/(\d+) pairs, ETA \?", lines[0])[1])
    assert total > 0 and len(lines) >= total
    assert any(re.search(rf" {total // 2}/{total} pairs, [\d.]+ samples/s, ETA \d+:\d\d:\d\d$", ln) for ln in lines)


def test_interval_default_and_env(monkeypatch):
    monkeypatch.delenv("CLIPDISTILL_PROGRESS_SECONDS", raising=False)
    assert interval_seconds() == 30.0
    monkeypatch.setenv("CLIPDISTILL_PROGRESS_SECONDS", "2.5")
    assert interval_seconds() == 2.5
