"""`balance` under torchrun: 2 gloo processes (each assigning half the k-means chunks and de-duplicating its
share of the clusters, the solvers fed all-reduced counts, rank 0 gathering and writing) give the same
outputs, byte for byte, as 1 process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from feat_helpers import make_store

from ddp_helpers import run_ok

OUTPUTS = ["keys.txt", "kept.npy", "kept_keys.txt", "labels.npy", "centroids.npy", "mm_labels.npy",
           "mm_centroids.npy", "clusters.png"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """1500 rows in 10 clusters of very different sizes, a quarter near-copies of another row, 60 re-encoded
    copies (same pHash) of 30 pictures; 3 shards, so the 2 ranks assign different chunks."""
    rng = np.random.default_rng(4)
    sizes = np.array([500, 300, 200, 150, 100, 80, 60, 50, 40, 20])
    emb = np.concatenate([c + rng.standard_normal((m, 32)) for c, m in
                          zip(rng.standard_normal((10, 32)) * 3, sizes, strict=True)])
    copies = rng.choice(len(emb), 375, replace=False)
    emb[copies] = emb[rng.integers(0, len(emb), 375)] + 0.002 * rng.standard_normal((375, 32))
    phash = rng.integers(0, 2**63, len(emb), dtype=np.uint64)
    emb[1400:1460] = emb[np.repeat(np.arange(1300, 1330), 2)] + 0.01 * rng.standard_normal((60, 32))
    phash[1400:1460] = phash[np.repeat(np.arange(1300, 1330), 2)]
    keys = [f"k{i:05d}" for i in range(len(emb))]
    return make_store(tmp_path_factory.mktemp("ranks"), keys, emb, shard_size=600, phash=phash)


def _balance(store: Path, out: Path, procs: int, *args: str) -> str:
    cmd = ["-m", "clipdistill", "balance", "--features", str(store), "--out", str(out), "--clusters", "10",
           "--device", "cpu", "--timeout-s", "120", *args]
    if procs > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *cmd]
    return run_ok([sys.executable, *cmd])


@pytest.mark.parametrize("args", [
    ("--target-keep", "0.563", "--perceptual", "0", "--labels", "multimodal", "--order", "far"),  # cap solved
    ("--target-keep", "0.563", "--cap", "200"),  # threshold bisected: one all-reduce per pass
], ids=["solve-cap", "solve-threshold"])
def test_two_ranks_write_what_one_process_writes(store, tmp_path, args):
    one = _balance(store, tmp_path / "one", 1, *args)
    two = _balance(store, tmp_path / "two", 2, *args)
    assert two.count("kept ") == 1 and two.splitlines()[-1].replace("/two/", "/one/") == one.splitlines()[-1]
    for name in OUTPUTS:
        if name.startswith("mm_") and "multimodal" not in args:
            assert not (tmp_path / "two" / name).exists()
            continue
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    r1, r2 = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert r1.pop("timings_s").keys() == r2.pop("timings_s").keys()  # seconds differ, nothing else does
    assert r1 == r2
    assert 0 < r1["kept"] < r1["samples"] and abs(r1["kept_fraction"] - 0.563) <= 0.01 * 0.563
    if "--perceptual" in args:
        assert r1["perceptual_duplicates"] >= 60


def test_a_bad_option_stops_every_rank_at_once(store, tmp_path):
    """Every rank refuses what rank 0 refuses (none is left waiting for rank 0's centroids until the timeout)."""
    import subprocess

    from ddp_helpers import REPO, one_thread_env

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "clipdistill",
           "balance", "--features", str(store), "--out", str(tmp_path / "bal"), "--clusters", "99999", "--device",
           "cpu", "--timeout-s", "600"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=one_thread_env(), cwd=REPO)
    assert done.returncode != 0
    assert done.stderr.count("error: --clusters 99999 is more than the 1500 samples in the store") == 2, done.stderr
    assert not (tmp_path / "bal" / "kept_keys.txt").exists()  # (the traceback in stderr is torchrun's own report)
