"""Batches for training and embedding: one pass over the data feeds every model view.

`views` maps a key prefix to (image transform, tokenizer): {"": student, "teacher_": teacher}. Each batch is
a dict with `key`, `caption`, `index` and, per view, `<prefix>image` / `<prefix>text`.

Order is a pure function of (seed, rank, world_size): resuming at `start_step` skips exactly the batches a
run already consumed. Each sample's random augmentation is drawn from torch, python and numpy streams seeded by
(seed, key), so it is the same whichever worker, rank or resume point reads it, and it leaves the caller's RNGs
untouched.
Skipped samples travel through the batch (`_skips`) so counts made in worker processes reach the source's
counter in the main process.
"""

from __future__ import annotations

import random
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate, get_worker_info

from clipdistill.data.sources import MapSource, Sample, ShardSource, SkipCounter
from clipdistill.errors import DataError

Views = dict[str, tuple[Callable, Callable]]
WARN_FRACTION = 0.01


def _seed_streams(seed: int) -> None:
    # The CPU generator alone: torch.manual_seed also walks every accelerator backend (~200x slower per call)
    # and gives the CPU stream the same state, so transforms draw the same numbers.
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Every RNG a transform may draw from (torch CPU, python, numpy) seeded for one sample.

    In the caller's process the streams are restored after. A loader worker's streams serve the transforms
    alone and every sample reseeds them, so there they are not saved and restored (numpy's state round trip
    costs more than the seeding): the draws are the same either way.
    """
    if get_worker_info() is not None:
        _seed_streams(seed)
        yield
        return
    py, npy, pt = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
    _seed_streams(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.default_generator.set_state(pt)


def encode(sample: Sample, views: Views, index: int, seed: int) -> dict:
    item = {"key": sample.key, "caption": sample.text, "index": index}
    with _seeded(zlib.crc32(f"{seed}/{sample.key}".encode())):
        for prefix, (transform, tokenizer) in views.items():
            item[f"{prefix}image"] = transform(sample.image)
            item[f"{prefix}text"] = tokenizer([sample.text])[0]
    return item


def collate(items: list[dict]) -> dict:
    skips = SkipCounter()
    good = []
    for it in items:
        if "_skip" in it:
            skips.update(it["_skip"])
        else:
            good.append(it)
            if "_note" in it:  # a kept sample with a counted fix-up (caption_truncated)
                skips[it["_note"]] += 1
    batch: dict = {"_skips": skips, "_items": len(items), "key": [it["key"] for it in good],
                   "caption": [it["caption"] for it in good],
                   "index": torch.tensor([it["index"] for it in good], dtype=torch.long)}
    for name in (good[0] if good else {}):
        if name.endswith("image") or name.endswith("text"):
            # default_collate stacks straight into shared memory inside a worker: the batch then reaches the
            # main process without the extra copy that pickling a plain tensor makes
            batch[name] = default_collate([it[name] for it in good])
    return batch


class _MapDataset(Dataset):
    def __init__(self, source: MapSource, views: Views, seed: int):
        self.source, self.views, self.seed = source, views, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        sample, reason = self.source.load(i)
        if sample is None:
            return {"_skip": {reason: 1}}
        item = encode(sample, self.views, i, self.seed)
        if reason:
            item["_note"] = reason
        return item


class _StreamDataset(IterableDataset):
    def __init__(self, source: ShardSource, views: Views, rank: int, world_size: int, keys: set[str] | None,
                 skip_samples: int, seed: int):
        self.source, self.views, self.rank, self.world_size = source, views, rank, world_size
        self.keys, self.skip_samples, self.seed = keys, skip_samples, seed

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        slot, slots = self.rank * nw + wid, self.world_size * nw
        shards = list(self.source.shard_order()) if not self.source.resampled else None
        by_shard = shards is not None and len(shards) >= slots
        seen = 0
        for si, shard in enumerate(shards if shards is not None else self.source.shard_order()):
            if by_shard and si % slots != slot:
                continue
            counts = Counter()
            # drops read before the resume point were counted by the run being resumed: only later ones count
            at_resume = Counter() if seen >= self.skip_samples else None
            for j, sample in enumerate(self.source.iter_shard(shard, counts)):
                if not by_shard and (si * 1_000_003 + j) % slots != slot:
                    continue  # fewer shards than readers: split by sample instead
                if self.keys is not None and sample.key not in self.keys:
                    continue
                seen += 1
                if seen > self.skip_samples:
                    yield encode(sample, self.views, j, self.seed)
                elif seen == self.skip_samples:
                    at_resume = counts.copy()
            after = counts - at_resume if at_resume is not None else Counter()
            if after:
                yield {"_skip": dict(after)}


class Batches:
    """An iterable over batches that folds skip counts back into the source and polices the drop rate."""

    def __init__(self, loader: DataLoader, source, num_batches: int | None, drop_partial: int = 0):
        # drop_partial: a stream's drop_last, applied here rather than by the DataLoader so that the skip
        # records in a dropped last batch are still counted (a source whose every sample is bad must say so)
        self.loader, self.source, self.num_batches, self.drop_partial = loader, source, num_batches, drop_partial

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("a streaming source has no length")
        return self.num_batches

    def __iter__(self) -> Iterator[dict]:
        kept = skipped = 0
        warned = False
        for batch in self.loader:
            skips = batch.pop("_skips")
            self.source.skips.update(skips)
            skipped += skips.total
            if batch.pop("_items") < self.drop_partial:
                continue
            kept += len(batch["key"])
            if not warned and skipped > WARN_FRACTION * (kept + skipped) and kept + skipped >= 100:
                warnings.warn(f"{self.source_name}: {skipped} of {kept + skipped} samples dropped so far "
                              f"({dict(self.source.skips)})", stacklevel=2)
                warned = True
            if batch["key"]:
                yield batch
        if kept == 0 and skipped > 0:
            raise DataError(f"{self.source_name}: every sample was dropped ({dict(self.source.skips)})")

    def count(self) -> int:
        """Batches in one pass, read without adding to the source's skip counts (a stream's length)."""
        n, skips = 0, SkipCounter()
        for batch in self.loader:
            skips.update(batch["_skips"])
            n += bool(batch["key"]) and batch["_items"] >= self.drop_partial
        if n == 0 and skips.total:
            raise DataError(f"{self.source_name}: every sample was dropped ({dict(skips)})")
        return n

    @property
    def source_name(self) -> str:
        return getattr(self.source, "name", getattr(self.source, "pattern", "data"))


def map_indices(source: MapSource, *, shuffle: bool, seed: int, rank: int, world_size: int,
                keys: set[str] | None) -> list[int]:
    idx = list(range(len(source))) if keys is None else [i for i, k in enumerate(source.keys) if k in keys]
    if keys is not None and not idx:
        raise DataError(f"{source.name}: none of the {len(keys)} requested keys are in this source")
    if shuffle:
        perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed)).tolist()
        idx = [idx[p] for p in perm]
    usable = len(idx) // world_size * world_size  # equal shards: collectives need the same step count
    return idx[rank:usable:world_size]


def make_loader(source, views: Views, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, rank: int = 0, world_size: int = 1, keys=None, start_step: int = 0,
                drop_last: bool = False) -> Batches:
    keys = set(keys) if keys is not None else None
    common = dict(num_workers=num_workers, collate_fn=collate,
                  generator=torch.Generator().manual_seed(seed), persistent_workers=False)
    if isinstance(source, MapSource):
        idx = map_indices(source, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, keys=keys)
        batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        batches = batches[start_step:]
        loader = DataLoader(_MapDataset(source, views, seed), batch_sampler=batches, **common)
        return Batches(loader, source, len(batches))
    if isinstance(source, ShardSource):
        ds = _StreamDataset(source, views, rank, world_size, keys, start_step * batch_size, seed)
        loader = DataLoader(ds, batch_size=batch_size, **common)
        return Batches(loader, source, None, drop_partial=batch_size if drop_last else 0)
    raise DataError(f"not a clipdistill data source: {type(source).__name__}")
