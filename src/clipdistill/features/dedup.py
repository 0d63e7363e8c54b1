"""Greedy semantic de-duplication inside one cluster, and the per-cluster cap.

Walk the members in a fixed order; a member is dropped when its cosine similarity to a member already
kept exceeds `threshold`. Blocked so that a cluster of m members costs O(m * kept) dot products and
O(block^2) memory; with a cap the walk stops once `cap` members are kept (later ones would be cut anyway).
"""

from __future__ import annotations

import numpy as np


def greedy_dedup(emb: np.ndarray, threshold: float, cap: int | None = None, block: int = 2048) -> np.ndarray:
    """Positions (into `emb`, ascending) of the members kept. `emb`: [m, D] unit rows in walk order."""
    m, d = emb.shape
    kept = np.empty((min(m, cap or m), d), dtype=np.float32)
    kept_pos: list[np.ndarray] = []
    n_kept = 0
    for lo in range(0, m, block):
        x = emb[lo:lo + block]
        alive = np.ones(len(x), dtype=bool)
        if n_kept:
            alive &= (x @ kept[:n_kept].T).max(1) <= threshold
        close = np.triu(x @ x.T > threshold, 1)  # close[i, j]: j comes after i and is within threshold of it
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
