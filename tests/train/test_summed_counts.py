"""`summed_counts` over 2 gloo ranks (spawned): per-key sums of counts whose keys differ between ranks (one rank's
empty, none at all), exchanged as tensors with no pickled object; the same answer as summing on one process."""

from __future__ import annotations

import json
from collections import Counter

from ddp_helpers import join_as_rank, spawn_ranks

# each case: (rank 0's counts, rank 1's counts)
CASES = [
    ({"undecodable_image": 2, "zero_byte": 1}, {"zero_byte": 3, "missing_caption": 1, "caption_truncated": 0}),
    ({}, {"unsafe_path": 4}),
    ({"ünïcode_reason": 1}, {}),
    ({}, {}),
]


def counts_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from pathlib import Path

    import torch.distributed as dist

    from clipdistill.train.distributed import init_distributed, shutdown, summed_counts

    def pickled(*args, **kwargs):
        raise AssertionError("summed_counts pickled an object")

    dist.all_gather_object = dist.broadcast_object_list = pickled
    join_as_rank(rank, world, port)
    info = init_distributed("cpu", 60)
    try:
        got = [summed_counts(Counter(case[rank]), info) for case in CASES]
    finally:
        shutdown(info)
    (Path(out_dir) / f"counts{rank}.json").write_text(json.dumps(got))


def test_summed_counts_over_two_ranks_equals_the_sum_on_one(tmp_path):
    from clipdistill.train.distributed import DistInfo, summed_counts

    spawn_ranks(counts_worker, str(tmp_path))
    ranks = [json.loads((tmp_path / f"counts{r}.json").read_text()) for r in range(2)]
    # one process summing both ranks' dicts (Counter's `+` would drop the zero)
    want = [summed_counts({k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}, DistInfo()) for a, b in CASES]
    assert ranks[0] == ranks[1] == want
    # a zero count is kept (as the pickled version kept it); keys sorted
    assert want[0] == {"caption_truncated": 0, "missing_caption": 1, "undecodable_image": 2, "zero_byte": 4}
    assert want[1:] == [{"unsafe_path": 4}, {"ünïcode_reason": 1}, {}]
