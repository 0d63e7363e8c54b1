"""What `distill` joins to the training data by sample key, from earlier stages:

- `teacher.mode: cached` -> a feature store (`clipdistill embed`): teacher features per batch instead of a
  teacher forward; with an `--augs K` store the student sees the replayed view whose embedding is stored.
- `data.keep` -> a balance output (`clipdistill balance`): train on its kept-list only, with its cluster
  labels (per batch) and centres (for the cluster loss).
- `data.hard_negatives: swap` -> each caption with one attribute phrase swapped (the negclip loss's hard
  negative); a caption naming none gets no negative and is counted `no_hard_negative`.

`DataJoins.batch` turns every loader batch into the `DistillBatch` the task reads, joined data included.
Everything joins by sample key, never by the loader's `index`: that is the source row for a map source but
only the position inside its tar for a stream source. Joins are pure functions of (key, epoch, seed), so
a resumed run (`make_loader(start_step=...)`) sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from clipdistill.data import LoaderBatch
from clipdistill.data.attributes import AttributeVocab
from clipdistill.distill.batch import DistillBatch, TeacherMode
from clipdistill.distill.config import DistillConfig
from clipdistill.manifest import check_manifest


class _Replay:
    """A sample's stored augmented view for this epoch, in place of its decoded picture (picklable for loader
    workers)."""

    def __init__(self, cached, epoch: int, seed: int):
        self.cached, self.epoch, self.seed = cached, epoch, seed

    def __call__(self, key: str, image):
        return self.cached.view_image(key, image, self.cached.pick_view(key, self.epoch, self.seed))


class Joined:
    """`Batches` with a per-batch join applied; keeps `len()`, `count()` and `epoch_count()` so the loop counts
    steps per epoch as it would on the loader's own batches (a stream's from its sample count)."""

    def __init__(self, batches, fn: Callable[[LoaderBatch], DistillBatch]):
        self.batches, self.fn = batches, fn

    def __len__(self) -> int:
        return len(self.batches)

    def count(self) -> int:
        count = getattr(self.batches, "count", None)
        return count() if count else sum(1 for _ in self.batches)

    def epoch_count(self):
        """A stream's batches per epoch from its sample count (`data.Batches.epoch_count`), nothing read."""
        return self.batches.epoch_count()

    def __iter__(self) -> Iterator[DistillBatch]:
        return (self.fn(b) for b in self.batches)


class DataJoins:
    def __init__(self, cfg: DistillConfig, source):
        from clipdistill.features import BalanceResult, CachedTeacher  # optional part of the install

        self.fingerprint = fingerprint = source.fingerprint()
        self.mode = TeacherMode.of(cfg.teacher.mode)
        self.cached = self.balance = None
        if cfg.teacher.mode == "cached":
            spec = cfg.teacher.models[0] if cfg.teacher.models else None
            self.cached = CachedTeacher(cfg.teacher.features, teacher=spec, fingerprint=fingerprint)
        if cfg.data.keep:
            self.balance = BalanceResult(cfg.data.keep, fingerprint=fingerprint)
        self.filter = cfg.data.filter
        self.fixed_scale = cfg.teacher.logit_scale
        self.seed = cfg.train.seed
        self.swaps = AttributeVocab(cfg.data.attributes) if cfg.data.hard_negatives == "swap" else None
        self.skips = source.skips

    @property
    def replays(self) -> bool:
        """An `--augs` store: the student sees the stored views (already augmented: eval transform only)."""
        return self.cached is not None and self.cached.num_views > 0

    @property
    def teacher_dim(self) -> int | None:
        return int(self.cached.store.manifest["teacher"]["embed_dim"]) if self.cached else None

    @property
    def teacher_hash(self) -> str | None:
        return self.cached.store.manifest["teacher"].get("weights_sha256") if self.cached else None

    @property
    def keys(self) -> list[str] | None:
        """The training subset: the kept-list, a same-size uniform sample of every balanced key, or all (None)."""
        if self.balance is None or self.filter is False:
            return None
        kept = self.balance.kept_keys
        if self.filter != "random":
            return kept
        # the same-size control (docs/reconstruction.md#cid-total): does balancing beat any subset of its size?
        # Every rank draws the same sample (seeded by train.seed), so the loader shards it as it would the kept-list.
        pick = np.random.default_rng(self.seed).choice(len(self.balance.keys), size=len(kept), replace=False)
        return [self.balance.keys[i] for i in np.sort(pick)]

    def centres(self, teacher_hash: str | None) -> torch.Tensor:
        """The balance's cluster centres; they live in its teacher's space, so another teacher is refused."""
        if teacher_hash is not None:
            check_manifest(self.balance.manifest, {"teacher.weights_sha256": teacher_hash},
                           f"balance output {self.balance.root} (its centres are in another teacher's space)")
        return torch.from_numpy(self.balance.centroids())

    def source_for(self, source, epoch: int):
        if not self.replays:
            return source
        return source.with_image_hook(_Replay(self.cached, epoch, self.seed))  # same rows and skip counter

    def wrap(self, batches, epoch: int) -> Joined:
        return Joined(batches, lambda b: self.batch(b, epoch))

    def batch(self, loaded: LoaderBatch, epoch: int) -> DistillBatch:
        """The distill batch of one loader batch, with this run's cached teacher features and cluster labels."""
        keys = loaded.keys
        cached = labels = None
        if self.cached is not None:
            views = [self.cached.pick_view(k, epoch, self.seed) for k in keys] if self.replays else None
            cached = self.cached.features(keys, views)
            if self.fixed_scale is not None:
                cached = replace(cached, logit_scale=torch.tensor(float(self.fixed_scale)))
        if self.balance is not None:
            labels = torch.from_numpy(self.balance.labels_for(keys).astype(np.int64))
        negatives = None
        if self.swaps is not None:
            negatives = [self.hard_negative(k, c, epoch) for k, c in zip(keys, loaded.captions, strict=True)]
            self.skips["no_hard_negative"] += sum(n is None for n in negatives)
        return DistillBatch.from_loader(loaded, self.mode, cached=cached, cluster_labels=labels, negatives=negatives)

    def hard_negative(self, key: str, caption: str, epoch: int) -> str | None:
        """`caption` with one attribute swapped, drawn from (key, epoch, seed) alone, so every rank, worker count
        and resume draws the same one."""
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{epoch}:{key}".encode()))
        return self.swaps.swap(caption, g)

    def teachers(self) -> list[dict]:
        """The cached teacher as the run manifest lists teachers (plus where its features came from)."""
        if self.cached is None:
            return []
        t = self.cached.store.manifest["teacher"]
        return [{"spec": t.get("spec"), "weights_sha256": t.get("weights_sha256"),
                 "features": str(self.cached.store.root), "augs": self.cached.num_views}]

    def data(self) -> dict:
        """The balance output this run trained on, for the run manifest's `data`."""
        if self.balance is None:
            return {}
        counts = self.balance.manifest.get("counts", {})
        return {"keep": {"dir": str(self.balance.root), "kept": len(self.balance.kept_keys), "filter": self.filter,
                         "samples": counts.get("samples"), "clusters": self.balance.num_clusters,
                         "label_space": self.balance.space}}
