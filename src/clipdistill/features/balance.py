"""Image semantic balance — OUR RECONSTRUCTION of CLIP-CID's data step (docs/reconstruction.md#cid-balance).

The paper says only that it "filters out 43.7% of image-text pairs from LAION400M"; the steps below follow
the same group's UNICOM/MLCD machinery and SemDeDup, and every choice is an option:

1. spherical k-means (faiss) on teacher embeddings in `space`: the image embeddings, or (UNICOM clusters on
   "joint textual and visual features") norm(norm(img) + norm(txt)); trained on a random sample, assigned in
   chunks;
1b. with `perceptual`, in each cluster, drop pictures whose perceptual hash (pHash, stored by `embed --phash`)
   is within `perceptual` bits of one kept before it: copies of one picture, re-encoded or resized;
2. in each cluster, greedy semantic de-dup in the same `space`: walking members in `order`, drop one whose
   cosine to a member already kept exceeds `threshold`;
3. cap over-represented clusters at `cap` kept members;
4. with `target_keep`, solve the cap (or, when de-dup alone keeps too little, the threshold) so the kept
   fraction meets the target.

Rows are read from the memory-mapped store a group of clusters at a time, so memory stays bounded. The
similarity blocks of step 2 run as torch matmuls on CUDA when `device` allows (numpy on CPU), with the same
kept set (features/dedup.py). Under torchrun, rank 0 trains the centroids, the ranks assign a share of the
chunks each and de-duplicate a share of the clusters each (balanced by size^2, the de-dup's cost), the solvers
see every cluster's kept count (one all-reduce per pass), and rank 0 gathers the kept rows and writes DIR.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field, model_validator

from clipdistill.config import StrictModel
from clipdistill.errors import UserError
from clipdistill.features.dedup import greedy_dedup, hash_dedup, solve_cap
from clipdistill.features.kmeans import assign, train_centroids, use_gpu
from clipdistill.features.store import FeatureStore
from clipdistill.progress import StageProgress
from clipdistill.train.distributed import DistInfo, gather_rows, init_distributed, shutdown


class BalanceOptions(StrictModel):
    clusters: int = Field(..., ge=1, description="K, number of k-means clusters")
    target_keep: float | None = Field(None, gt=0, le=1, description="kept fraction to solve for (CLIP-CID: 0.563)")
    threshold: float | None = Field(None, ge=-1, le=1, description="cosine above which a later member is a duplicate")
    cap: int | None = Field(None, ge=1, description="most members kept per cluster")
    perceptual: int | None = Field(None, ge=0, le=64, description="first drop a member whose 64-bit pHash "
                                   "is within this many bits of one kept before it in its cluster (perceptual "
                                   "redundancy; needs `embed --phash`); none: skip")
    space: Literal["image", "multimodal"] = Field("image", description="vectors clustered and de-duplicated: "
                                                  "teacher image embeddings, or norm(norm(img)+norm(txt))")
    order: Literal["store", "far"] = Field("store", description="de-dup walk: store order, or farthest from the "
                                           "centroid first (SemDeDup keeps the least typical)")
    labels: Literal["image", "multimodal"] = Field("image", description="cluster labels for the cluster loss: "
                                                   "the image clustering, or k-means on norm(norm(img)+norm(txt))")
    train_points: int = Field(64, ge=1, description="k-means training sample: this many points per centroid")
    niter: int = Field(20, ge=1)
    chunk: int = Field(65536, ge=1, description="rows per assignment chunk")
    group_rows: int = Field(65536, ge=1, description="rows of whole clusters read together for de-dup")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="k-means (faiss) and the de-dup's "
                                                   "similarity blocks (torch) on CUDA when visible (auto) or "
                                                   "always (cuda), or on CPU")
    timeout_s: float = Field(1800.0, gt=0, description="torchrun: how long a rank waits for the others")

    @model_validator(mode="after")
    def _solvable(self) -> BalanceOptions:
        if self.target_keep is not None and self.threshold is not None and self.cap is not None:
            raise ValueError("give --target-keep with at most one of --threshold / --cap (the other is solved)")
        return self


DEFAULT_THRESHOLD = 0.95  # starting threshold when it is to be solved or not given (SemDeDup-like eps = 0.05)
SOLVE_STEPS = 14


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Vectors:
    """Unit vectors to cluster, read from the store: image, or the multimodal norm(img + txt)."""

    def __init__(self, store: FeatureStore, kind: str, chunk: int):
        self.store, self.kind, self.chunk = store, kind, chunk

    def rows(self, idx: np.ndarray) -> np.ndarray:
        x = _unit(self.store.rows("image", idx))
        return x if self.kind == "image" else _unit(x + _unit(self.store.rows("text", idx)))

    def chunks(self, rank: int = 0, world: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(global start row, unit vectors) of every `world`-th chunk from the `rank`-th (`FeatureStore.chunks`)."""
        if self.kind == "image":
            for start, block in self.store.chunks("image", self.chunk, rank, world):
                yield start, _unit(block)
        else:
            for (start, img), (_, txt) in zip(self.store.chunks("image", self.chunk, rank, world),
                                              self.store.chunks("text", self.chunk, rank, world), strict=True):
                yield start, _unit(_unit(img) + _unit(txt))


Space = Literal["image", "multimodal"]


@dataclass(frozen=True)
class Clustering:
    """k-means of the store in one space."""

    centroids: np.ndarray  # float32 [K, D] unit
    labels: np.ndarray  # int [N] cluster of each store row
    sims: np.ndarray  # float32 [N] cosine of each row to its centroid
    objective: float  # faiss k-means objective after the last iteration


@dataclass(frozen=True)
class Balanced:
    """What `balance()` returns (no files written): the kept rows and every clustering computed."""

    kept: np.ndarray  # bool [N], store order
    space: Space  # the space clustered and de-duplicated in (`opts.space`)
    image: Clustering  # always computed: labels.npy / centroids.npy
    multimodal: Clustering | None  # with space or labels "multimodal"
    threshold: float  # the de-dup threshold used (given or solved)
    cap: int | None  # the per-cluster cap used (given or solved)
    survivors_before_cap: int | None  # known only when the cap is solved after an uncapped de-dup
    perceptual_duplicates: int | None  # dropped by the pHash step; None: step not run
    gpu: bool  # faiss ran on GPU
    dedup_device: str | None = None  # torch device of the de-dup's similarity blocks; None: numpy
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step

    def clustering(self, space: Space) -> Clustering:
        found = self.image if space == "image" else self.multimodal
        if found is None:
            raise ValueError(f"no {space} clustering was computed")
        return found

    @property
    def deduped(self) -> Clustering:
        """The clustering the de-dup and cap ran in (cluster sizes of the report)."""
        return self.clustering(self.space)


def cluster(vectors: Vectors, opts: BalanceOptions, gpu: bool, info: DistInfo = DistInfo()) -> Clustering:
    """k-means: centroids trained on rank 0 (sent to the others), each rank assigning its share of the chunks,
    the labels gathered on every rank."""
    n = len(vectors.store)
    if opts.clusters > n:  # here too, not only in train_centroids: every rank must refuse, none wait for rank 0
        raise UserError(f"--clusters {opts.clusters} is more than the {n} samples in the store")
    centroids, obj = np.zeros((0, 0), np.float32), 0.0
    if info.is_main:
        centroids, obj = train_centroids(vectors.rows, n, opts.clusters, sample=opts.train_points * opts.clusters,
                                         niter=opts.niter, seed=opts.seed, gpu=gpu)
    if info.enabled:
        centroids, obj = _from_main(centroids, obj, info)
    done: list[tuple[int, int]] = []

    def mine() -> Iterator[tuple[int, np.ndarray]]:
        for start, x in vectors.chunks(info.rank, info.world_size):
            done.append((start, len(x)))
            yield start, x

    labels, sims = assign(mine(), centroids, n, gpu, info.local_rank if info.enabled else None)
    if info.enabled:  # every rank's (row, label) pairs and sims, as tensors (exact: int32 labels fit int64)
        rows = np.concatenate([np.arange(a, a + m, dtype=np.int64) for a, m in done] or [np.empty(0, np.int64)])
        pairs = torch.from_numpy(np.stack([rows, labels[rows].astype(np.int64)], axis=1))
        for got, sim in zip(gather_rows(pairs, info), gather_rows(torch.from_numpy(sims[rows]), info), strict=True):
            at = got[:, 0].numpy()
            labels[at], sims[at] = got[:, 1].numpy(), sim.numpy()
    return Clustering(centroids=centroids, labels=labels, sims=sims, objective=obj)


def _from_main(centroids: np.ndarray, obj: float, info: DistInfo) -> tuple[np.ndarray, float]:
    """Rank 0's centroids and objective on every rank: tensor broadcasts (the shape first), nothing pickled."""
    shape = torch.tensor(centroids.shape, dtype=torch.int64, device=info.device)
    dist.broadcast(shape, src=0)
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(info.device)
    if not info.is_main:
        c = torch.empty(tuple(shape.tolist()), dtype=torch.float32, device=info.device)
    o = torch.tensor([obj], dtype=torch.float64, device=info.device)
    dist.broadcast(c, src=0)
    dist.broadcast(o, src=0)
    return c.cpu().numpy(), float(o)


def walk_order(labels: np.ndarray, sims: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows grouped by cluster in walk order, start offset of each cluster in it)."""
    if order == "store":
        rows = np.argsort(labels, kind="stable")
    else:  # farthest from the centroid first
        rows = np.lexsort((sims, labels))
    sizes = np.bincount(labels, minlength=int(labels.max()) + 1)
    return rows, np.concatenate([[0], np.cumsum(sizes)])


def share(sizes: np.ndarray, info: DistInfo) -> np.ndarray:
    """The clusters (ascending) this rank de-duplicates: largest cost first to the least loaded rank, cost
    size^2 (a greedy walk compares each member with those kept before it); the same answer on every rank."""
    if not info.enabled:
        return np.arange(len(sizes))
    load = np.zeros(info.world_size)
    owner = np.empty(len(sizes), dtype=np.int64)
    for c in np.argsort(-sizes.astype(np.float64) ** 2, kind="stable"):
        owner[c] = int(np.argmin(load))
        load[owner[c]] += float(sizes[c]) ** 2
    return np.nonzero(owner == info.rank)[0]


@dataclass
class Kept:
    """Kept store rows (walk order) of this rank's clusters, and every cluster's kept count (all ranks)."""

    rows: dict[int, np.ndarray]
    counts: np.ndarray  # int64 [K]

    def capped(self, cap: int) -> Kept:
        return Kept({c: x[:cap] for c, x in self.rows.items()}, np.minimum(self.counts, cap))


def _counted(rows: dict[int, np.ndarray], k: int, info: DistInfo) -> Kept:
    counts = np.zeros(k, dtype=np.int64)
    counts[list(rows)] = [len(x) for x in rows.values()]
    if info.enabled:  # the clusters are disjoint across ranks: a sum is every cluster's count
        t = torch.from_numpy(counts).to(info.device)
        dist.all_reduce(t)
        counts = t.cpu().numpy()
    return Kept(rows, counts)


def per_cluster(rows: np.ndarray, bounds: np.ndarray, read: Callable[[np.ndarray], np.ndarray],
                keep: Callable[[np.ndarray], np.ndarray], group_rows: int,
                clusters: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Kept store rows of each of `clusters` (ascending; default all), in walk order: `keep(one cluster's
    values)` gives the positions kept, `read(store rows)` the values. Whole clusters are read together up to
    `group_rows`."""
    clusters = np.arange(len(bounds) - 1) if clusters is None else clusters
    kept: dict[int, np.ndarray] = {}
    g = 0
    while g < len(clusters):
        stop = g + 1  # at least one cluster per read, however big
        total = bounds[clusters[g] + 1] - bounds[clusters[g]]
        while stop < len(clusters) and total + bounds[clusters[stop] + 1] - bounds[clusters[stop]] <= group_rows:
            total += bounds[clusters[stop] + 1] - bounds[clusters[stop]]
            stop += 1
        members = [rows[bounds[c]:bounds[c + 1]] for c in clusters[g:stop]]
        values = read(np.concatenate(members))
        lo = 0
        for c, m in zip(clusters[g:stop], members, strict=True):
            kept[int(c)] = m[keep(values[lo:lo + len(m)])]
            lo += len(m)
        g = stop
    return kept


def dedup_all(vectors: Vectors, rows: np.ndarray, bounds: np.ndarray, threshold: float, cap: int | None,
              group_rows: int, clusters: np.ndarray | None = None, device: str | None = None
              ) -> dict[int, np.ndarray]:
    """Semantic de-dup (and cap) of `clusters` (default all): kept store rows of each, in walk order."""
    return per_cluster(rows, bounds, vectors.rows, lambda e: greedy_dedup(e, threshold, cap, device=device),
                       group_rows, clusters)


def drop_perceptual(store: FeatureStore, rows: np.ndarray, bounds: np.ndarray, max_distance: int,
                    group_rows: int, info: DistInfo = DistInfo()) -> tuple[np.ndarray, np.ndarray]:
    """(rows, bounds) without the perceptual duplicates: per cluster, a member whose pHash is within
    `max_distance` bits of a member kept before it in the walk. Copies of one picture embed alike, so they
    share a cluster; looking only inside clusters keeps this O(cluster size) per member at any N. Under
    torchrun each rank does its share of the clusters and every rank gets the whole result."""
    if "phash" not in store.fields:
        raise UserError(f"{store.root} holds no perceptual hashes: re-embed with --phash to use --perceptual")
    kept = per_cluster(rows, bounds, lambda idx: store.rows("phash", idx), lambda h: hash_dedup(h, max_distance),
                       group_rows, share(np.diff(bounds), info))
    k = len(bounds) - 1
    if info.enabled:  # each cluster is one rank's: its (cluster, row) pairs, gathered, keep their walk order
        mine = [np.stack([np.full(len(x), c, dtype=np.int64), x.astype(np.int64)], axis=1) for c, x in kept.items()]
        pairs = torch.cat(gather_rows(torch.from_numpy(np.concatenate([np.empty((0, 2), np.int64), *mine])), info))
        pairs = pairs[torch.sort(pairs[:, 0], stable=True).indices].numpy()
        return pairs[:, 1], np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=k))])
    ordered = [kept[c] for c in range(k)]
    return np.concatenate(ordered), np.concatenate([[0], np.cumsum([len(x) for x in ordered])])


def _fraction(kept: Kept, cap: int | None, n: int) -> float:
    return float((kept.counts if cap is None else np.minimum(kept.counts, cap)).sum()) / n


def solve_threshold(run: Callable[[float], Kept], cap: int | None, target: float, n: int,
                    lo: float) -> tuple[float, Kept]:
    """Bisect the threshold (higher keeps more) until the kept fraction is within 1% of the target. Every rank
    sees the same global counts, so every rank takes the same steps."""
    hi = 1.0
    best = (lo, run(lo))
    for _ in range(SOLVE_STEPS):
        f = _fraction(best[1], cap, n)
        if abs(f - target) <= 0.01 * target:
            break
        lo, hi = (best[0], hi) if f < target else (lo, best[0])
        mid = (lo + hi) / 2
        best = (mid, run(mid))
    return best


def dedup_device(opts: BalanceOptions, info: DistInfo) -> str | None:
    """Where the de-dup's similarity blocks run: this process's CUDA device when `--device` allows and torch
    sees one, else None (numpy: measured faster than torch on this project's CPU machine)."""
    if opts.device == "cuda" and info.device.type != "cuda":
        raise UserError("--device cuda but torch sees no CUDA device (a CUDA build of torch is needed for the "
                        "de-dup; --device auto runs it on CPU)")
    return str(info.device) if info.device.type == "cuda" else None


def balance(store: FeatureStore, opts: BalanceOptions, info: DistInfo = DistInfo()) -> Balanced | None:
    """Cluster, de-duplicate and cap. Returns arrays + the solved parameters + timings (no files); under
    torchrun (`info`), every rank takes part and only rank 0 gets the result (None on the others)."""
    gpu = use_gpu(opts.device)
    device = dedup_device(opts, info)
    n = len(store)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # passes: k-means, then one de-dup of every cluster per threshold tried (their number depends on the solve)
    bar = StageProgress("balance", None, unit="passes", enabled=info.is_main)
    vectors = Vectors(store, opts.space, opts.chunk)
    grouping = cluster(vectors, opts, gpu, info)
    timings["kmeans_and_assign"] = time.perf_counter() - t0
    bar.advance(info=f"k-means ({opts.clusters} clusters) done")
    rows, bounds = walk_order(grouping.labels, grouping.sims, opts.order)
    perceptual = None
    if opts.perceptual is not None:
        t0 = time.perf_counter()
        rows, bounds = drop_perceptual(store, rows, bounds, opts.perceptual, opts.group_rows, info)
        perceptual = n - len(rows)
        timings["perceptual_dedup"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    threshold, cap = opts.threshold, opts.cap
    survivors: int | None = None  # known only when the cap is solved after an uncapped de-dup
    mine = share(np.diff(bounds), info)

    def run(t: float, c: int | None = None) -> Kept:
        kept = _counted(dedup_all(vectors, rows, bounds, t, c, opts.group_rows, mine, device), len(bounds) - 1,
                        info)
        bar.advance(info=f"de-dup at threshold {t:.4f}")
        return kept

    if opts.target_keep is None:
        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        kept = run(threshold, cap)
    elif cap is not None:  # the threshold is solved, starting from a low one (keeps least)
        most = np.minimum(np.diff(bounds), cap).sum() / n  # nothing de-duplicated
        if most < opts.target_keep * 0.99:
            raise UserError(f"--cap {cap} keeps at most {most:.3f} of the samples, below --target-keep "
                            f"{opts.target_keep}: raise --cap or leave it out to have it solved")
        threshold, kept = solve_threshold(lambda t: run(t, cap), None, opts.target_keep, n, lo=-1.0)
    else:
        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        kept = run(threshold)  # survivors of every cluster without a cap, then the cap that meets the target
        if _fraction(kept, None, n) < opts.target_keep * 0.99:
            if opts.threshold is not None:
                raise UserError(f"de-dup at --threshold {threshold} already keeps only "
                                f"{_fraction(kept, None, n):.3f} < --target-keep {opts.target_keep}: raise "
                                "--threshold or leave it out to have it solved")
            threshold, kept = solve_threshold(run, None, opts.target_keep, n, lo=threshold)
        survivors = int(kept.counts.sum())
        cap = solve_cap(kept.counts, round(opts.target_keep * n))
        kept = kept.capped(cap)
    timings["dedup_and_cap"] = time.perf_counter() - t0
    bar.close()

    mask_rows = np.concatenate([np.empty(0, dtype=np.int64), *kept.rows.values()])
    if info.enabled:
        mask_rows = torch.cat(gather_rows(torch.from_numpy(mask_rows.astype(np.int64)), info)).numpy()
    keep_mask = np.zeros(n, dtype=bool)
    keep_mask[mask_rows] = True
    clusterings = {opts.space: grouping}
    for space in sorted({opts.labels, "image"} - {opts.space}):  # labels.npy is always the image clustering
        t0 = time.perf_counter()
        clusterings[space] = cluster(Vectors(store, space, opts.chunk), opts, gpu, info)
        timings[f"{space}_kmeans"] = time.perf_counter() - t0
    if not info.is_main:
        return None
    return Balanced(kept=keep_mask, space=opts.space, image=clusterings["image"],
                    multimodal=clusterings.get("multimodal"), threshold=threshold, cap=cap,
                    survivors_before_cap=survivors, perceptual_duplicates=perceptual, gpu=gpu,
                    dedup_device=device, timings=timings)


def join_ranks(opts: BalanceOptions) -> DistInfo:
    """This process's place in torchrun's group, joined here (one process outside torchrun); a missing faiss GPU
    is refused before any group is joined."""
    use_gpu(opts.device)
    return init_distributed("cpu" if opts.device == "cpu" else "auto", opts.timeout_s)


def run_balance(features: str | Path, out: str | Path, opts: BalanceOptions, *, teacher: str | None = None,
                fingerprint: str | None = None) -> dict | None:
    """`clipdistill balance`: read the store (refusing another teacher / source), balance, write DIR. Under
    torchrun every rank computes its share and rank 0 writes DIR and returns the report (None on the others)."""
    from clipdistill.features.balance_output import write_outputs
    from clipdistill.features.balance_report import build_report, plot_report

    store = FeatureStore(features, teacher=teacher, fingerprint=fingerprint)
    if len(store) == 0:
        raise UserError(f"feature store {features} holds no samples")
    info = join_ranks(opts)  # the command's group when it joined one first (init_distributed keeps it)
    try:
        result = balance(store, opts, info)
    finally:
        shutdown(info)
    if result is None:
        return None
    report = build_report(result, opts.clusters, opts.target_keep, opts.seed)
    out = Path(out)
    write_outputs(out, store, opts.model_dump(mode="json"), result, report)
    plot_report(report, out / "clusters.png")
    return report
