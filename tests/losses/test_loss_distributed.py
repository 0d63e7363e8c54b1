"""Two gloo processes on half-batches give the single-process loss and (after the DDP average) gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import loss_dist_worker as w  # noqa: E402

WORLD = 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(w.worker, args=(WORLD, str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    out = {case: [load_file(tmp / f"{case}.{r}.safetensors") for r in range(WORLD)] for case in w.CASES}
    return out | {f"{case}.uneven": [load_file(tmp / f"{case}.uneven.{r}.safetensors") for r in range(WORLD)]
                  for case in w.UNEVEN_CASES}


@pytest.mark.parametrize("case", list(w.CASES))
def test_gathered_equals_single_process(shards, case):
    full = w.step(case, slice(None))
    ranks = shards[case]
    local = w.CASES[case][1]
    for key in (k for k in full if k.startswith("value.")):
        per_rank = torch.cat([r[key] for r in ranks])
        # local-loss and per-sample terms (fd): each rank averages its own rows; DDP averages the ranks
        assert per_rank.mean().item() == pytest.approx(full[key].item(), rel=1e-5), key
        if not local and key not in ("value.fd", "value.loss"):  # gathered terms: the same global loss
            assert torch.allclose(per_rank, full[key].expand(WORLD), rtol=1e-5), key
    shard = w.BATCH // WORLD
    assert ("grad.neg" in full) == case.startswith("negclip")
    for name in (k for k in full if k.startswith("grad.")):
        # all_gather's backward sums every rank's gradient into the shard; DDP's average divides by WORLD
        got = torch.cat([r[name] for r in ranks]) / WORLD
        assert torch.allclose(got, full[name], atol=1e-6), name
        assert ranks[0][name].shape[0] == shard
    params = [k for k in full if k.startswith("param.")]
    assert (case.startswith("kd")) == bool(params)
    for name in params:
        assert torch.allclose(sum(r[name] for r in ranks) / WORLD, full[name], atol=1e-6), name


def test_uneven_shards_gather_the_whole_batch(shards):
    """Ranks holding 3 and 1 rows: gathered terms give every rank the full-batch loss and the full-batch
    gradients on its own rows; local-loss rows find their positive at the right offset."""
    for case in ("kd_gathered", "negclip"):
        full = w.step(case, slice(None))
        ranks = shards[f"{case}.uneven"]
        for key in (k for k in full if k.startswith("value.")):
            for r in ranks:
                assert r[key].item() == pytest.approx(full[key].item(), rel=1e-5), key
        assert [r["grad.img"].shape[0] for r in ranks] == [w.UNEVEN_SPLIT, w.BATCH - w.UNEVEN_SPLIT]
        for name in (k for k in full if k.startswith("grad.")):
            assert torch.allclose(torch.cat([r[name] for r in ranks]) / WORLD, full[name], atol=1e-6), (case, name)
    # local loss: each rank averages its own rows, so the row-weighted mean of the ranks is the full loss
    full = w.step("clip_local", slice(None))["value.clip"]
    ranks = shards["clip_local.uneven"]
    rows = torch.tensor([w.UNEVEN_SPLIT, w.BATCH - w.UNEVEN_SPLIT], dtype=torch.float32)
    weighted = sum(n * r["value.clip"] for n, r in zip(rows, ranks, strict=True)) / rows.sum()
    assert weighted.item() == pytest.approx(full.item(), rel=1e-5)
