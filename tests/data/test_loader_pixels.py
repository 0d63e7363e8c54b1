"""Training batches carry uint8 pixels out of the loader and are made float in the main process (data/pixels.py):
every view's images must be bit for bit what the model's whole transform gives image by image, with the same
augmentation draws, for map and stream sources and with loader workers."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from clipdistill.data import make_loader, open_source
from clipdistill.data.loader import encode
from clipdistill.data.pixels import SplitTransform
from clipdistill.zoo import load_model

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))  # the shared image builders
from rel_helpers import caption, png_bytes, sample_members, write_pairs, write_tar  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_model("open_clip:cd-student-xs-32")


def _views(m):
    # a random-crop training view, then a deterministic one (an online teacher's)
    return [(m.train_transform, m.tokenizer), (m.eval_transform, m.tokenizer)]


def _check(batches, samples: dict[str, tuple], views, seed: int) -> int:
    n = 0
    for b in batches:
        for v, view in enumerate(b.views):
            assert view.image.dtype == torch.float32 and view.image.is_contiguous()
            want = torch.stack([encode(samples[k][0], views, samples[k][1], seed).views[v][0] for k in b.keys])
            assert torch.equal(view.image, want), f"view {v}, keys {b.keys}"
        n += len(b)
    return n


@pytest.mark.parametrize("workers", [0, 2])
def test_map_source_batches_equal_the_whole_transform(model, tmp_path, workers):
    # sizes other than the model's, so the crop and resize do real work
    rows = [(f"k{i}", png_bytes(i, size=40 + 3 * i), caption(i)) for i in range(10)]
    src = open_source(str(write_pairs(tmp_path, rows=rows)))
    samples = {s.key: (s, i) for i in range(len(src)) for s in [src.load(i)[0]]}
    views = _views(model)
    loader = make_loader(src, views, 4, shuffle=True, seed=7, num_workers=workers)
    assert all(isinstance(s, SplitTransform) for s in loader.splits)
    assert _check(loader, samples, views, 7) == 10


def test_stream_source_batches_equal_the_whole_transform(model, tmp_path):
    src = open_source(str(write_tar(tmp_path / "shard-000000.tar", sample_members(range(6)))))
    shard = next(iter(src.shard_order()))
    samples = {s.key: (s, j) for j, s in enumerate(src.iter_shard(shard, Counter()))}
    views = _views(model)
    assert _check(make_loader(src, views, 4, seed=3), samples, views, 3) == 6


def test_a_cuda_run_keeps_the_whole_transform_in_the_workers(model, tmp_path):
    # the DataLoader pins a CUDA run's batches before the main process sees them: finishing there would unpin them
    src = open_source(str(write_pairs(tmp_path, n=4)))
    assert make_loader(src, _views(model), 2, device="cuda").splits == ()
    assert len(make_loader(src, _views(model), 2, device="cpu").splits) == 2
