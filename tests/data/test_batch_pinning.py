"""The batch objects that cross a DataLoader (`LoaderBatch` and its `View`s from `make_loader`, `EmbedBatch` from
embed's loader) are pinned by torch's pin-memory path only through their own `pin_memory()`: each has one, it
pins every tensor and keeps every other field. Checked without CUDA by recording `Tensor.pin_memory` calls.
(`DistillBatch` and `TDBatch` are built in the training process after the loader: nothing pins them.)"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data._utils.pin_memory import pin_memory

from clipdistill.data import LoaderBatch, SkipCounter, View, make_loader, open_source
from clipdistill.data.loader import SkippedSamples
from clipdistill.features.embed import EmbedBatch, _collate, _Encoded

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))  # the shared image builders
from rel_helpers import caption, png_bytes, write_pairs  # noqa: E402


def image(im) -> torch.Tensor:
    return torch.ones(3, 4, 4)


def tokens(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[len(t), 1] for t in texts])


@pytest.fixture
def pinned(monkeypatch) -> dict[int, torch.Tensor]:
    """`Tensor.pin_memory` recorded: id of each tensor pinned -> the copy it returned (a CPU-only torch cannot
    page-lock memory)."""
    calls: dict[int, torch.Tensor] = {}

    def record(self, *args, **kwargs):
        calls[id(self)] = self.clone()
        return calls[id(self)]

    monkeypatch.setattr(torch.Tensor, "pin_memory", record)
    return calls


def tensors(obj) -> list[torch.Tensor]:
    """Every tensor in a batch object, views and nested dataclasses included."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, tuple | list):
        return [t for x in obj for t in tensors(x)]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in tensors(getattr(obj, f.name))]
    return []


def check(batch, pinned: dict[int, torch.Tensor]):
    """torch's pin-memory path on `batch`: the same type back, every tensor a pinned copy, the rest the same."""
    before = tensors(batch)
    out = pin_memory(batch)
    assert type(out) is type(batch) and before
    assert {id(t) for t in before} == set(pinned)  # each tensor went through Tensor.pin_memory, once
    after = tensors(out)
    assert [id(t) for t in after] == [id(pinned[id(t)]) for t in before]  # the copies, in their places
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    for f in dataclasses.fields(batch):
        if not tensors(getattr(batch, f.name)):
            assert getattr(out, f.name) is getattr(batch, f.name), f.name
    return out


def test_loader_batch_is_pinned_through_its_views(tmp_path, pinned):
    rows = [(f"k{i}", b"" if i == 1 else png_bytes(i), caption(i)) for i in range(4)]
    src = open_source(str(write_pairs(tmp_path, rows=rows)))
    batch = next(iter(make_loader(src, [(image, tokens), (image, tokens)], 4)))
    assert isinstance(batch, LoaderBatch) and len(batch.views) == 2 and batch.skips == {"zero_byte": 1}
    out = check(batch, pinned)
    assert out.keys == ["k0", "k2", "k3"] and out.items == 4 and all(isinstance(v, View) for v in out.views)


def test_embed_batch_is_pinned_with_its_augmented_views(pinned):
    def encoded(i: int, augs: bool) -> _Encoded:
        view = (torch.full((3, 4, 4), float(i)), torch.tensor([i, 1]))
        return _Encoded(f"k{i}", f"caption {i}", i, (view,), phash=i,
                        aug_image=torch.zeros(2, 3, 4, 4) if augs else None, aug_params=[{"i": i}] if augs else None)

    batch = _collate([encoded(0, True), SkippedSamples({"zero_byte": 1}), encoded(1, True)])
    assert isinstance(batch, EmbedBatch) and batch.aug_image is not None and batch.phash.dtype == np.uint64
    out = check(batch, pinned)
    assert out.keys == ["k0", "k1"] and out.aug_params == [[{"i": 0}], [{"i": 1}]]
    pinned.clear()
    plain = check(_collate([encoded(2, False)]), pinned)
    assert plain.aug_image is None and len(pinned) == 2
    empty = _collate([SkippedSamples({"zero_byte": 1})])  # every sample dropped: no tensor to pin, the skips kept
    assert pin_memory(empty) == empty and empty.skips == SkipCounter({"zero_byte": 1})


@pytest.fixture
def accelerator(monkeypatch) -> list[torch.Tensor]:
    """torch's DataLoader believing a CUDA accelerator is present, so that its pin-memory path runs as on a GPU
    machine; `Tensor.pin_memory` returns a marked copy, kept in the list returned."""
    copies: list[torch.Tensor] = []

    def record(self, *args, **kwargs):
        copies.append(self.clone())
        return copies[-1]

    monkeypatch.setattr(torch.Tensor, "pin_memory", record)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("cuda"))
    return copies


def names(batch) -> list[str]:
    return [k.rpartition("/")[2] for k in batch.keys]  # a tar's keys carry its name: "s/k0"


@pytest.mark.parametrize("kind", ["table", "stream"])
def test_make_loader_pins_batches_for_a_cuda_device_only(tmp_path, kind, accelerator):
    rows = [(f"k{i}", png_bytes(i), caption(i)) for i in range(4)]
    table = write_pairs(tmp_path, rows=rows)
    if kind == "table":
        src = open_source(str(table))
    else:
        import tarfile

        with tarfile.open(tmp_path / "s.tar", "w") as tar:
            for key, data, text in rows:
                for ext, payload in (("png", data), ("txt", text.encode())):
                    (tmp_path / f"{key}.{ext}").write_bytes(payload)
                    tar.add(tmp_path / f"{key}.{ext}", arcname=f"{key}.{ext}")
        src = open_source(str(tmp_path / "s.tar"))
    for device in (None, "cpu", torch.device("cpu")):  # a CPU run: no pinning asked, batches as read
        batches = make_loader(src, [(image, tokens)], 2, device=device)
        assert batches.loader.pin_memory is False
        assert [names(b) for b in batches] == [["k0", "k1"], ["k2", "k3"]] and not accelerator
    for device in ("cuda", torch.device("cuda", 1)):
        batches = make_loader(src, [(image, tokens)], 2, device=device)
        assert batches.loader.pin_memory is True
        got = list(batches)
        assert [names(b) for b in got] == [["k0", "k1"], ["k2", "k3"]]
        # the loop receives the pinned copies (LoaderBatch.pin_memory): the index and every view's tensors
        mine = {id(t) for t in accelerator}
        assert all(id(t) in mine for b in got for t in tensors(b)) and len(tensors(got[0])) == 3
        accelerator.clear()
