"""Scale-out is torchrun, nothing home-made: the same `distill` command on 1 process, 2 processes on one node,
and 2 "nodes" (two torchrun agents on this machine) meeting through the c10d rendezvous on loopback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from clipdistill.safeload import load_tensors
from ddp_helpers import REPO, distill_args, free_port, one_thread_env, run_ok, write_square_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_square_pairs(tmp_path_factory.mktemp("pairs"))


def scaleout_args(pairs: Path, out: Path, batch: int) -> list[str]:
    return distill_args(pairs, out, batch, "train.log_every=1")


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / "model.safetensors")


def test_two_nodes_through_c10d_rendezvous_equal_one_node_two_procs(pairs, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    # 2 x 8 on one node, and 2 nodes x 1 x 8; (DDP == one process on the same global batch is tests/train/test_ddp.py)
    run_ok([*torchrun, "--standalone", "--nproc_per_node", "2", *scaleout_args(pairs, tmp_path / "one_node", 8)])
    port = free_port()
    nodes = [
        subprocess.Popen([*torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(r),
                          "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "t",
                          *scaleout_args(pairs, tmp_path / "two_nodes", 8)],
                         env=one_thread_env(), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    for p in nodes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    b, c = weights(tmp_path / "one_node"), weights(tmp_path / "two_nodes")
    assert b.keys() == c.keys()
    for k in b:
        assert torch.equal(b[k], c[k]), k  # the same 2-process computation, whichever way the processes met
    steps = [json.loads(line)["step"] for line in (tmp_path / "two_nodes" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 2  # 32 pairs / global batch 16


def test_ddp_survives_a_corrupt_sample_and_counts_it(pairs, tmp_path):
    """A rank whose batch lost a sample gathers fewer rows than its peer; the run finishes and the manifest
    counts the dropped read (before, gloo aborted on the mismatched all_gather)."""
    bad = tmp_path / "pairs"
    bad.mkdir()
    lines = pairs.read_text().splitlines()
    for line in lines[1:]:
        name = line.split(",")[1]
        (bad / name).write_bytes((pairs.parent / name).read_bytes())
    (bad / "5.png").write_bytes(b"not a png")
    (bad / "pairs.csv").write_text("\n".join(lines) + "\n")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    stdout = run_ok([*torchrun, *scaleout_args(bad / "pairs.csv", tmp_path / "run", 8)])
    assert stdout.count("wrote ") == 1  # rank 0 speaks for the run
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["skipped_reads"] == {"undecodable_image": 1}
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 2
    assert all(torch.isfinite(v).all() for v in weights(tmp_path / "run").values())


def test_ddp_ends_each_epoch_together_on_uneven_shards(pairs, tmp_path):
    """Three tar shards over two ranks: rank 0 reads two, rank 1 one. Both stop when rank 1 runs out, instead of
    rank 0 waiting in a collective rank 1 never joins."""
    lines = pairs.read_text().splitlines()[1:]
    for s in range(3):
        with tarfile.open(tmp_path / f"s-{s}.tar", "w") as tar:
            for line in lines[s * 8:(s + 1) * 8]:
                key, name, caption = line.split(",")
                for member, data in ((f"{key}.png", (pairs.parent / name).read_bytes()),
                                     (f"{key}.txt", caption.encode())):
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run_ok([*torchrun, *scaleout_args(tmp_path / "s-{0..2}.tar", tmp_path / "run", 4), "--set", "train.epochs=2"])
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # rank 1 holds 8 pairs = 2 batches of 4 per epoch; rank 0 holds 4 batches but only 2 per epoch are used
    assert [(r["step"], r["epoch"]) for r in steps] == [(1, 0), (2, 0), (3, 1), (4, 1)]
