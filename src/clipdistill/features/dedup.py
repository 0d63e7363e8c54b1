"""Greedy de-duplication inside one cluster, semantic (embeddings) or perceptual (image hashes), and the cap.

Walk the members in a fixed order; a member is dropped when it is near a member already kept: cosine
similarity above `threshold` (semantic), or a 64-bit perceptual hash within `max_distance` bits (perceptual).
Blocked so that a cluster of m members costs O(m * kept) comparisons and O(block^2) memory; with a cap the
walk stops once `cap` members are kept (later ones would be cut anyway).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Near = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (a [p, ...], b [q, ...]) -> bool [p, q]


def greedy_dedup(emb: np.ndarray, threshold: float, cap: int | None = None, block: int = 2048) -> np.ndarray:
    """Positions (into `emb`, ascending) of the members kept. `emb`: [m, D] unit rows in walk order."""
    return greedy_walk(emb.astype(np.float32, copy=False), lambda a, b: a @ b.T > threshold, cap, block)


def hash_dedup(hashes: np.ndarray, max_distance: int, block: int = 2048) -> np.ndarray:
    """Positions (into `hashes`, ascending) kept: uint64 perceptual hashes in walk order; a member whose hash
    differs in at most `max_distance` bits from a kept one's is a perceptual duplicate (0: identical hashes)."""
    return greedy_walk(hashes.astype(np.uint64, copy=False),
                       lambda a, b: np.bitwise_count(a[:, None] ^ b[None, :]) <= max_distance, None, block)


def perceptual_hash(image) -> int:
    """pHash (imagehash, 8x8 DCT bits of a 32x32 greyscale) of a PIL image, as an unsigned 64-bit integer."""
    import imagehash

    bits = np.asarray(imagehash.phash(image).hash, dtype=bool).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def greedy_walk(items: np.ndarray, near: Near, cap: int | None = None, block: int = 2048) -> np.ndarray:
    """Positions (ascending) of the members of `items` (walk order) kept by the greedy walk under `near`."""
    m = len(items)
    kept = np.empty((min(m, cap or m), *items.shape[1:]), dtype=items.dtype)
    kept_pos: list[np.ndarray] = []
    n_kept = 0
    for lo in range(0, m, block):
        x = items[lo:lo + block]
        alive = np.ones(len(x), dtype=bool)
        if n_kept:
            alive &= ~near(x, kept[:n_kept]).any(1)
        close = np.triu(near(x, x), 1)  # close[i, j]: j comes after i and is near it
        for i in np.nonzero(close.any(1) & alive)[0]:
            if alive[i]:  # i is kept, so everything close to it after it goes
                alive[close[i]] = False
        pos = np.nonzero(alive)[0]
        if cap is not None:
            pos = pos[:cap - n_kept]
        kept[n_kept:n_kept + len(pos)] = x[pos]
        n_kept += len(pos)
        kept_pos.append(pos + lo)
        if cap is not None and n_kept >= cap:
            break
    return np.concatenate(kept_pos) if kept_pos else np.empty(0, dtype=np.int64)


def solve_cap(survivors: np.ndarray, target: int) -> int:
    """Smallest-error integer cap: sum(min(survivors, cap)) closest to `target` (ties: the larger cap)."""
    s = np.sort(survivors)
    caps = np.arange(0, int(s[-1]) + 1) if len(s) else np.zeros(1, dtype=np.int64)
    # kept(cap) = sum over clusters of min(size, cap), for every integer cap at once
    below = np.searchsorted(s, caps, side="left")
    csum = np.concatenate([[0], np.cumsum(s)])
    kept = csum[below] + caps * (len(s) - below)
    best = int(np.argmin(np.abs(kept - target) * (len(caps) + 1) - caps))  # min error, then larger cap
    return max(1, int(caps[best]))
