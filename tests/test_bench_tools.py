"""The benchmark tools that must fail loudly: gpu_check without a GPU, bench_peer without its peers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BENCH / "gpu_check.sh"), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_without_cuda_says_no_gpu_and_fails(tmp_path):
    proc = _run(["--out", str(tmp_path)])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("no GPU:"), proc.stdout
    assert json.loads((tmp_path / "gpu_check.json").read_text())["status"] == "no GPU"
    assert not (tmp_path / "gpu_check.md").exists()  # no table of figures that could be quoted as GPU figures


@pytest.mark.slow
def test_gpu_check_cpu_dry_run_runs_every_check(tmp_path):
    proc = _run(["--cpu-dry-run", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "cpu-dry-run" and report["status"] == "ok"
    checks = report["checks"]
    assert set(checks) == {"amp_bf16", "amp_fp16", "ddp_nccl", "faiss_gpu", "throughput_mfu"}
    for name in ("amp_bf16", "amp_fp16"):
        assert checks[name]["ok"] and checks[name]["checkpoint"] and len(checks[name]["losses"]) >= 2
    assert checks["ddp_nccl"]["backend"] == "gloo" and checks["ddp_nccl"]["all_reduce"]
    mfu = checks["throughput_mfu"]
    assert mfu["step_flops"] > 0 and 0 < mfu["mfu_of_measured_peak"] < 1
    assert "not GPU figures" in (tmp_path / "gpu_check.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is not None, reason="the peers' pandas is installed here")
def test_bench_peer_skips_a_missing_peer_with_the_install_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CLIPDISTILL_PEER_PATH"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_peer.py"), "--only", "plain", "--work",
                           str(tmp_path / "w"), "--out", str(tmp_path / "peer.json")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "SKIP: ModuleNotFoundError: No module named 'pandas'" in proc.stdout, proc.stdout
    assert "pip install -e '.[bench]'" in proc.stdout
    report = json.loads((tmp_path / "peer.json").read_text())
    assert "open_clip_train" in report["skipped"] and report["checks"] == []
