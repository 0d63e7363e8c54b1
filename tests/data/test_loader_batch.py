"""The loader's batch as a typed contract: one `View` per (transform, tokenizer) in the order given, the skip
counts riding in the batch (across worker processes) and counted into the source once, and `to()`."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from clipdistill.data import LoaderBatch, make_loader, open_source

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))  # the shared image builders
from rel_helpers import caption, png_bytes, write_pairs  # noqa: E402


# module-level, so that a loader worker can unpickle them
def side2(im) -> torch.Tensor:
    return torch.zeros(3, 2, 2)


def side4(im) -> torch.Tensor:
    return torch.ones(3, 4, 4)


def words(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[len(t.split())] for t in texts])


def letters(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[len(t), 0, 0] for t in texts])


@pytest.fixture
def src(tmp_path):
    """Five rows, the second an empty file (a zero_byte drop inside the first batch of two)."""
    rows = [(f"k{i}", b"" if i == 1 else png_bytes(i), caption(i)) for i in range(5)]
    return open_source(str(write_pairs(tmp_path, rows=rows)))


def test_views_come_in_the_order_given_the_students_first(src):
    batches = list(make_loader(src, [(side2, words), (side4, letters), (side2, letters)], 2))
    assert all(isinstance(b, LoaderBatch) for b in batches)
    b = batches[0]
    assert b.keys == ["k0"] and b.captions == [caption(0)] and b.index.tolist() == [0] and len(b) == 1
    assert b.student is b.views[0] and len(b.views) == 3
    assert [tuple(v.image.shape) for v in b.views] == [(1, 3, 2, 2), (1, 3, 4, 4), (1, 3, 2, 2)]
    assert [tuple(v.text.shape) for v in b.views] == [(1, 1), (1, 3), (1, 3)]
    assert b.views[0].text.tolist() == [[len(caption(0).split())]] and b.views[1].text.tolist() == [[len(caption(0)),
                                                                                                     0, 0]]
    assert [k for b in batches for k in b.keys] == ["k0", "k2", "k3", "k4"]


@pytest.mark.parametrize("workers", [0, 1])
def test_skips_ride_in_the_batch_and_reach_the_source_once(src, workers):
    loader = make_loader(src, [(side2, words)], 2, num_workers=workers)  # with a worker, counts cross processes
    assert loader.count() == 3 and not src.skips  # a counting pass leaves the source's counter alone
    batches = list(loader)
    assert [dict(b.skips) for b in batches] == [{"zero_byte": 1}, {}, {}]
    assert [b.items for b in batches] == [2, 2, 1]  # samples read per batch, the dropped one included
    assert dict(src.skips) == dict(sum((b.skips for b in batches), Counter())) == {"zero_byte": 1}


def test_to_moves_every_tensor_and_keeps_the_rest(src):
    b = next(iter(make_loader(src, [(side2, words), (side4, letters)], 4)))
    moved = b.to(torch.device("meta"))
    assert moved.index.is_meta and all(v.image.is_meta and v.text.is_meta for v in moved.views)
    assert moved.keys == b.keys and moved.captions == b.captions and moved.skips == b.skips
    assert moved.items == b.items == 4 and not b.index.is_meta  # a new batch; the original is untouched


def test_views_as_a_dict_of_key_prefixes_are_refused(src):
    with pytest.raises(TypeError, match=r"\(image transform, tokenizer\) pairs, the student's first"):
        make_loader(src, {"": (side2, words)}, 2)
    with pytest.raises(TypeError, match="got none"):
        make_loader(src, [], 2)
