"""Spherical k-means with faiss: train on a sample, assign in chunks (so N can exceed RAM)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import faiss
import numpy as np

from clipdistill.errors import UserError

Rows = Callable[[np.ndarray], np.ndarray]  # global row numbers -> [n, D] float32 unit vectors


def use_gpu(choice: str) -> bool:
    gpus = getattr(faiss, "get_num_gpus", lambda: 0)()
    if choice == "cuda" and gpus == 0:
        raise UserError("--device cuda but faiss sees no GPU (is faiss-gpu installed?)")
    return choice != "cpu" and gpus > 0


def train_centroids(rows: Rows, n: int, k: int, *, sample: int, niter: int, seed: int,
                    gpu: bool) -> tuple[np.ndarray, float]:
    """(centroids [k, D] unit float32, final objective) from k-means on `sample` random rows."""
    if k > n:
        raise UserError(f"--clusters {k} is more than the {n} samples in the store")
    take = min(n, max(sample, k))
    idx = np.sort(np.random.default_rng(seed).choice(n, size=take, replace=False))
    x = np.ascontiguousarray(rows(idx), dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, spherical=True, seed=seed, gpu=gpu,
                      max_points_per_centroid=max(1, -(-take // k)), min_points_per_centroid=1,
                      verbose=False)
    km.train(x)
    return km.centroids.copy(), float(km.obj[-1]) if len(km.obj) else float("nan")


def assign(chunks: Iterator[tuple[int, np.ndarray]], centroids: np.ndarray, n: int,
           gpu: bool, gpu_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(label int32 [n], cosine to its centroid float32 [n]) by inner product with the unit centroids, on every
    visible GPU, or on GPU `gpu_id` alone (a torchrun rank's own, so ranks do not share every GPU)."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    if gpu:
        index = faiss.index_cpu_to_gpus_list(index, gpus=None if gpu_id is None else [gpu_id])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(n, dtype=np.int32)
    sims = np.empty(n, dtype=np.float32)
    for start, block in chunks:
        d, i = index.search(np.ascontiguousarray(block, dtype=np.float32), 1)
        labels[start:start + len(block)] = i[:, 0]
        sims[start:start + len(block)] = d[:, 0]
    return labels, sims
