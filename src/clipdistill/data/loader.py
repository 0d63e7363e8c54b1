"""Batches for training and embedding: one pass over the data feeds every model view.

`views` lists one (image transform, tokenizer) pair per model, the student's first; each batch is a
`LoaderBatch` (data/batch.py) with the keys, captions, source indices and one `View` per pair, in that order.

Order is a pure function of (seed, rank, world_size): resuming at `start_step` skips exactly the batches a
run already consumed. Each sample's random augmentation is drawn from torch, python and numpy streams seeded by
(seed, key), so it is the same whichever worker, rank or resume point reads it, and it leaves the caller's RNGs
untouched.
Skipped samples travel through the batch (`LoaderBatch.skips`) so counts made in worker processes reach the
source's counter in the main process.
"""

from __future__ import annotations

import functools
import random
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate, get_worker_info

from clipdistill.data.batch import LoaderBatch, View
from clipdistill.data.pixels import SplitTransform, split_transform
from clipdistill.data.sources import MapSource, Sample, ShardSource, SkipCounter
from clipdistill.errors import DataError

Views = Sequence[tuple[Callable, Callable]]  # (image transform, tokenizer) per model, the student's first
WARN_FRACTION = 0.01
SPREAD = 1_000_003  # fewer shards than readers: sample j of shard i goes to reader slot (i * SPREAD + j) % slots


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


@dataclass(frozen=True)
class EncodedSample:
    """One kept sample, encoded for every view: what a dataset hands to its collate function (this module's, and
    embed's, which extends it with the teacher pass's extras)."""

    key: str
    caption: str
    index: int  # in the source (a map source's row, a stream sample's place in its shard)
    views: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (image, token ids) per view
    note: str | None = None  # a counted fix-up of a kept sample (caption_truncated)


@dataclass(frozen=True)
class SkippedSamples:
    """Samples dropped while reading, counted by reason: what a dataset hands to its collate function in their
    place (a worker's counts reach the main process through the batch)."""

    counts: dict[str, int]


Record = EncodedSample | SkippedSamples


def split_records(items: Sequence[Record]) -> tuple[list[EncodedSample], SkipCounter]:
    """A batch's kept samples, and its drops with the kept samples' fix-ups (notes), counted by reason."""
    skips = SkipCounter()
    good = []
    for it in items:
        if isinstance(it, SkippedSamples):
            skips.update(it.counts)
        else:
            good.append(it)
            if it.note:
                skips[it.note] += 1
    return good, skips


def encode(sample: Sample, views: Views, index: int, seed: int, note: str | None = None) -> EncodedSample:
    # the views in the caller's order on one seeded stream: the student's first, so its draws are the same
    # whichever teacher views follow
    with _seeded(zlib.crc32(f"{seed}/{sample.key}".encode())):
        encoded = tuple((transform(sample.image), tokenizer([sample.text])[0]) for transform, tokenizer in views)
    return EncodedSample(sample.key, sample.text, index, encoded, note)


def collate(items: list[Record], splits: tuple[SplitTransform | None, ...] = ()) -> LoaderBatch:
    """`splits`: per view, the SplitTransform its images went through (their uint8 stack is finished in the main
    process, `Batches`), or None."""
    good, skips = split_records(items)
    # default_collate stacks straight into shared memory inside a worker: the batch then reaches the main process
    # without the extra copy that pickling a plain tensor makes
    views = []
    for v, per_sample in enumerate(zip(*(it.views for it in good), strict=True)):  # view by view
        images, ids = zip(*per_sample, strict=True)
        split = splits[v] if v < len(splits) else None
        images = split.uniform(list(images)) if split is not None else list(images)
        views.append(View(default_collate(images), default_collate(list(ids))))
    return LoaderBatch(keys=[it.key for it in good], captions=[it.caption for it in good],
                       index=torch.tensor([it.index for it in good], dtype=torch.long), views=tuple(views), skips=skips,
                       items=len(items))


class _MapDataset(Dataset):
    def __init__(self, source: MapSource, views: Views, seed: int):
        self.source, self.views, self.seed = source, views, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Record:
        sample, reason = self.source.load(i)
        if sample is None:
            return SkippedSamples({reason: 1})
        return encode(sample, self.views, i, self.seed, note=reason or None)


class _StreamDataset(IterableDataset):
    def __init__(self, source: ShardSource, views: Views, rank: int, world_size: int, keys: set[str] | None,
                 skip_samples: int, seed: int):
        self.source, self.views, self.rank, self.world_size = source, views, rank, world_size
        self.keys, self.skip_samples, self.seed = keys, skip_samples, seed

    @cached_property
    def kept_per_shard(self) -> dict[Path, int]:
        """The kept-list's keys per shard: one pass over the keys (millions, for a large kept-list) per dataset."""
        return _kept_per_shard(self.source, self.keys)

    def __iter__(self) -> Iterator[Record]:
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
                if not by_shard and (si * SPREAD + j) % slots != slot:
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
                yield SkippedSamples(dict(after))


@dataclass(frozen=True)
class EpochCount:
    """A stream's batches in one pass on this rank, reckoned from its sample count without reading the data.
    `samples`: the count it started from (the whole source, or the kept-list); `origin`: what gave it
    (`data.num_samples`, `sizes.json`, `__len__`, `header scan`, or `kept-list`)."""

    batches: int
    samples: int
    origin: str


def _share(n: int, slot: int, slots: int, offset: int) -> int:
    """How many of j in [0, n) have (offset + j) % slots == slot."""
    return n // slots + ((slot - offset) % slots < n % slots)


def _kept_per_shard(source: ShardSource, keys: set[str]) -> dict[Path, int]:
    """Kept-list keys (`SHARD/KEY`) per shard of `source`."""
    by_name = {name: shard for shard, name in source.names.items()}
    counts = Counter()
    for key in keys:
        cut = key.find("/")
        while cut > 0:
            if (shard := by_name.get(key[:cut])) is not None:
                counts[shard] += 1
                break
            cut = key.find("/", cut + 1)
    return counts


@dataclass(frozen=True)
class _PassCount:
    """The samples one pass over a stream gives (`origin`: what said so), per shard; `positions`: where the
    header scan listed each shard's samples, the sample's index in its shard (what a split by sample assigns by)."""

    total: int
    origin: str
    per_shard: dict[Path, int]
    positions: dict[Path, list[int]] | None = None


def _pass_count(ds: _StreamDataset, by_sample: bool) -> _PassCount:
    """A stream's count for one pass, from the first of these that applies (`by_sample`: fewer shards than
    readers, which then split each shard by sample position):
    1. a kept-list, read by whole shards or resampled: its keys per shard, the source's own count left unread;
    2. else the source's own (`ShardSource.sizes`: data.num_samples, sizes.json, __len__, else the header scan);
       split by sample, a header scan gives each shard's samples (a kept-list's among them) by position;
    3. a kept-list split by sample over a declared count: its keys per shard (the origin stays the declared one);
    4. a per-shard count (sizes.json, the scan), else a total alone spread evenly over the shards."""
    source = ds.source
    if ds.keys is not None and not by_sample:
        return _PassCount(sum(ds.kept_per_shard.values()), "kept-list", ds.kept_per_shard)
    sizes = source.sizes(progress=ds.rank == 0)
    if sizes.keys is not None and by_sample:
        positions = {shard: [j for j, k in enumerate(keys)
                             if ds.keys is None or f"{source.names[shard]}/{k}" in ds.keys]
                     for shard, keys in sizes.keys.items()}
        per_shard = {shard: len(js) for shard, js in positions.items()}
        return _PassCount(sum(per_shard.values()), sizes.origin, per_shard, positions)
    if ds.keys is not None:
        return _PassCount(sum(ds.kept_per_shard.values()), sizes.origin, ds.kept_per_shard)
    if sizes.per_shard is not None:
        return _PassCount(sizes.total, sizes.origin, sizes.per_shard)
    n = len(source.shards)
    return _PassCount(sizes.total, sizes.origin, {s: sizes.total // n + (i < sizes.total % n)
                                                  for i, s in enumerate(source.shards)})


def _reader_samples(ds: _StreamDataset, workers: int) -> tuple[list[int], int, str]:
    """(samples each of this rank's readers takes in one pass, the count they come from, its origin).

    Exact, on clean shards, where each shard's count is known and shards go whole to readers (sizes.json, a
    kept-list), or where the header scan listed each shard's keys; a total alone (data.num_samples,
    `__len__`), an endless resampled stream, or a kept-list split by sample is spread evenly."""
    source, nw = ds.source, max(1, workers)
    slots, mine = ds.world_size * nw, [ds.rank * nw + w for w in range(nw)]
    by_shard = not source.resampled and len(source.shards) >= slots
    count = _pass_count(ds, by_sample=not by_shard and not source.resampled)
    if ds.keys is not None and count.total == 0:  # a resampled stream too: it would draw forever and yield nothing
        raise DataError(f"{source.pattern}: none of the {len(ds.keys)} requested keys are in these shards")
    if source.resampled:
        return [_share(count.total, slot, slots, 0) for slot in mine], count.total, count.origin
    out = []
    for slot in mine:
        n = 0
        for si, shard in enumerate(source.shards):
            if by_shard:
                n += count.per_shard.get(shard, 0) if si % slots == slot else 0
            elif count.positions is not None:  # where each sample goes, exactly
                n += sum(1 for j in count.positions[shard] if (si * SPREAD + j) % slots == slot)
            else:
                n += _share(count.per_shard.get(shard, 0), slot, slots, si * SPREAD)
        out.append(n)
    return out, count.total, count.origin


class Batches:
    """An iterable over batches that folds skip counts back into the source and polices the drop rate."""

    def __init__(self, loader: DataLoader, source, num_batches: int | None, drop_partial: int = 0,
                 splits: tuple[SplitTransform | None, ...] = ()):
        # drop_partial: a stream's drop_last, applied here rather than by the DataLoader so that the skip
        # records in a dropped last batch are still counted (a source whose every sample is bad must say so)
        self.loader, self.source, self.num_batches, self.drop_partial = loader, source, num_batches, drop_partial
        self.splits = splits  # per view: finish its uint8 images here, in the main process (data/pixels.py)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("a streaming source has no length")
        return self.num_batches

    def __iter__(self) -> Iterator[LoaderBatch]:
        kept = skipped = 0
        warned = False
        for batch in self.loader:
            self.source.skips.update(batch.skips)  # once per batch: a yielded batch's `skips` are already counted
            skipped += batch.skips.total
            if batch.items < self.drop_partial:
                continue
            kept += len(batch)
            if not warned and skipped > WARN_FRACTION * (kept + skipped) and kept + skipped >= 100:
                warnings.warn(f"{self.source_name}: {skipped} of {kept + skipped} samples dropped so far "
                              f"({dict(self.source.skips)})", stacklevel=2)
                warned = True
            if batch.keys:
                yield self._finished(batch)
        if kept == 0 and skipped > 0:
            raise DataError(f"{self.source_name}: every sample was dropped ({dict(self.source.skips)})")

    def _finished(self, batch: LoaderBatch) -> LoaderBatch:
        if not any(self.splits):
            return batch
        views = tuple(View(split.finish(v.image), v.text) if split is not None else v
                      for v, split in zip(batch.views, self.splits, strict=True))
        return replace(batch, views=views)

    def epoch_count(self) -> EpochCount:
        """Batches in one pass on this rank without reading any sample: a map source's batch list, or a stream's
        from its sample count (`ShardSource.sizes`: data.num_samples, open_clip's sizes.json / __len__, or a
        scan of the tar headers; a kept-list's keys per shard), per reader (each loader worker batches its own
        share, the last batch short, or dropped with drop_last).

        A stream may hold fewer usable samples than counted (an image found undecodable, a count set too high):
        its pass then just ends early, and the training loop moves to the next epoch."""
        if self.num_batches is not None:
            return EpochCount(self.num_batches, len(self.source), "rows")
        ds, size = self.loader.dataset, self.loader.batch_size
        per_reader, samples, origin = _reader_samples(ds, self.loader.num_workers)
        batches = sum(n // size if self.drop_partial else -(-n // size) for n in per_reader)
        return EpochCount(batches, samples, origin)

    def count(self) -> int:
        """Batches in one pass, read without adding to the source's skip counts; a stream's come from
        `epoch_count` (no sample is read)."""
        if self.num_batches is None:
            return self.epoch_count().batches
        n, skips = 0, SkipCounter()
        for batch in self.loader:
            skips.update(batch.skips)
            n += bool(batch.keys) and batch.items >= self.drop_partial
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
                drop_last: bool = False, device: torch.device | str | None = None) -> Batches:
    """Batches of `source` as `LoaderBatch`es, one `View` per (image transform, tokenizer) in `views`.
    `device`: where the batches go. For CUDA they come in page-locked memory (`LoaderBatch.pin_memory`), so the
    loop's non_blocking copy overlaps the next step; elsewhere they are left as read (pinning buys a CPU run
    nothing and needs an accelerator)."""
    views = tuple(views)
    bad = [v for v in views if not (isinstance(v, tuple | list) and len(v) == 2 and all(map(callable, v)))]
    if bad or not views:  # a programming error, not bad data: e.g. the dict of key prefixes this function once took
        raise TypeError(f"make_loader: views must be (image transform, tokenizer) pairs, the student's first; "
                        f"got {repr(bad[0])[:80] if bad else 'none'}")
    keys = set(keys) if keys is not None else None
    pin = device is not None and torch.device(device).type == "cuda"
    # Workers hand over uint8 pixels and the main process makes them float (data/pixels.py), except for a CUDA
    # run: there the DataLoader pins the batch before the main process sees it, and a batch finished after that
    # would reach the loop unpinned.
    splits = () if pin else tuple(split_transform(t) for t, _ in views)
    views = tuple((split or t, tok) for (t, tok), split in zip(views, splits, strict=True)) if splits else views
    common = dict(num_workers=num_workers, collate_fn=functools.partial(collate, splits=splits), pin_memory=pin,
                  generator=torch.Generator().manual_seed(seed), persistent_workers=False)
    if isinstance(source, MapSource):
        idx = map_indices(source, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, keys=keys)
        batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        batches = batches[start_step:]
        loader = DataLoader(_MapDataset(source, views, seed), batch_sampler=batches, **common)
        return Batches(loader, source, len(batches), splits=splits)
    if isinstance(source, ShardSource):
        ds = _StreamDataset(source, views, rank, world_size, keys, start_step * batch_size, seed)
        loader = DataLoader(ds, batch_size=batch_size, **common)
        return Batches(loader, source, None, drop_partial=batch_size if drop_last else 0, splits=splits)
    raise DataError(f"not a clipdistill data source: {type(source).__name__}")
