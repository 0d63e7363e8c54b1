"""Greedy de-duplication inside one cluster, semantic (embeddings) or perceptual (image hashes), and the cap.

Walk the members in a fixed order; a member is dropped when it is near a member already kept: cosine
similarity above `threshold` (semantic), or a 64-bit perceptual hash within `max_distance` bits (perceptual).
Blocked so that a cluster of m members costs O(m * kept) comparisons and O(block^2) memory; with a cap the
walk stops once `cap` members are kept (later ones would be cut anyway).

Semantic similarities come from a float32 matrix product, on numpy or (`device`) torch, e.g. on the GPU. A
product's last bits depend on the library and its summation order, so a pair whose product lies within the
product's error bound of the threshold is decided by `exact_sims` instead: a fixed-order, error-free float64
sum, the same bits on every machine. So the kept set is the same on every backend, ties included: a pair is
near when float32(its cosine) > float32(threshold).
"""

from __future__ import annotations

import contextlib

import numpy as np

UNIT_ROUNDOFF_F32 = 2.0 ** -24


def greedy_dedup(emb: np.ndarray, threshold: float, cap: int | None = None, block: int = 2048,
                 device: str | None = None) -> np.ndarray:
    """Positions (into `emb`, ascending) of the members kept. `emb`: [m, D] unit rows in walk order.
    `device`: None computes the similarity blocks with numpy, a torch device ("cuda", "cpu") with torch."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    near = SemanticNear(emb, threshold, block) if device is None else TorchSemanticNear(emb, threshold, block, device)
    with near.session():
        return greedy_walk(len(emb), near, cap, block)


def hash_dedup(hashes: np.ndarray, max_distance: int, block: int = 2048) -> np.ndarray:
    """Positions (into `hashes`, ascending) kept: uint64 perceptual hashes in walk order; a member whose hash
    differs in at most `max_distance` bits from a kept one's is a perceptual duplicate (0: identical hashes)."""
    return greedy_walk(len(hashes), HashNear(hashes.astype(np.uint64, copy=False), max_distance), None, block)


def perceptual_hash(image) -> int:
    """pHash (imagehash, 8x8 DCT bits of a 32x32 greyscale) of a PIL image, as an unsigned 64-bit integer."""
    import imagehash

    bits = np.asarray(imagehash.phash(image).hash, dtype=bool).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def greedy_walk(m: int, near, cap: int | None = None, block: int = 2048) -> np.ndarray:
    """Positions (ascending) of the m members (walk order) kept by the greedy walk under `near`, which answers
    for the members [lo, hi): `hits` (near a member kept so far), `pairs` (sure, maybe: strict upper triangles
    of the block against itself; maybe pairs are settled one kept row at a time by `resolve`), and records the
    kept ones (`keep`)."""
    kept_pos: list[np.ndarray] = []
    n_kept = 0
    for lo in range(0, m, block):
        hi = min(m, lo + block)
        alive = ~near.hits(lo, hi) if n_kept else np.ones(hi - lo, dtype=bool)
        sure, maybe = near.pairs(lo, hi)  # [i, j]: j comes after i and is (maybe) near it
        some = sure.any(1) if maybe is None else sure.any(1) | maybe.any(1)
        for i in np.nonzero(some & alive)[0]:
            if alive[i]:  # i is kept, so everything close to it after it goes
                alive[sure[i]] = False
                if maybe is not None:
                    js = np.nonzero(maybe[i] & alive)[0]
                    if len(js):
                        alive[js[near.resolve(lo + i, lo + js)]] = False
        pos = np.nonzero(alive)[0]
        if cap is not None:
            pos = pos[:cap - n_kept]
        near.keep(lo, pos)
        n_kept += len(pos)
        kept_pos.append(pos + lo)
        if cap is not None and n_kept >= cap:
            break
    return np.concatenate(kept_pos) if kept_pos else np.empty(0, dtype=np.int64)


class HashNear:
    """Perceptual hashes within `max_distance` bits (exact integer test: nothing is 'maybe')."""

    def __init__(self, hashes: np.ndarray, max_distance: int):
        self.items, self.d = hashes, max_distance
        self.kept = np.empty(len(hashes), dtype=np.uint64)
        self.n = 0

    def _near(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.bitwise_count(a[:, None] ^ b[None, :]) <= self.d

    def hits(self, lo: int, hi: int) -> np.ndarray:
        return self._near(self.items[lo:hi], self.kept[:self.n]).any(1)

    def pairs(self, lo: int, hi: int) -> tuple[np.ndarray, None]:
        x = self.items[lo:hi]
        return np.triu(self._near(x, x), 1), None

    def keep(self, lo: int, pos: np.ndarray) -> None:
        self.kept[self.n:self.n + len(pos)] = self.items[lo + pos]
        self.n += len(pos)


def exact_sims(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 dot products of the row pairs (a[i], b[i]) (float32 rows), the same bits on every IEEE machine:
    each product is exact in float64, and the products are summed pairwise in a fixed order, every addition's
    rounding error kept (TwoSum) and added back, so the float64 result is off by ~D * 2^-106 before its one
    rounding to float32."""
    p = a.astype(np.float64) * b.astype(np.float64)
    err = np.zeros_like(p)
    while p.shape[1] > 1:
        if p.shape[1] % 2:
            p, err = (np.concatenate([z, np.zeros((len(z), 1))], axis=1) for z in (p, err))
        x, y = p[:, 0::2], p[:, 1::2]
        s = x + y
        z = s - x
        err = err[:, 0::2] + err[:, 1::2] + ((x - (s - z)) + (y - z))
        p = s
    return (p[:, 0] + err[:, 0]).astype(np.float32)


class SemanticNear:
    """Cosine above `threshold` of float32 unit rows, similarity blocks by numpy. A product within `margin` of
    the threshold (float32 GEMM error bound for D terms, plus one float32 step) is settled by `exact_sims`."""

    def __init__(self, emb: np.ndarray, threshold: float, block: int):
        self.emb = emb
        self.t = np.float32(threshold)
        d = emb.shape[1] if emb.ndim == 2 else 1
        norm = float(np.max(np.linalg.norm(emb, axis=1), initial=1.0)) if len(emb) else 1.0
        gamma = d * UNIT_ROUNDOFF_F32 / (1 - d * UNIT_ROUNDOFF_F32)
        self.margin = gamma * norm * norm * 1.01 + 2 * float(np.spacing(np.float32(1.0)))
        self.sure_above = np.float32(float(self.t) + self.margin)  # float32(product) > this: near on any backend
        self.maybe_above = np.float32(float(self.t) - self.margin)  # at most this: not near on any backend
        self.kept = np.empty((0, d), dtype=np.float32)
        self.n = 0

    @contextlib.contextmanager
    def session(self):
        yield

    def resolve(self, i: int, js: np.ndarray) -> np.ndarray:
        """Exact test of the pairs (i, js[k]) of members."""
        return exact_sims(np.broadcast_to(self.emb[i], (len(js), self.emb.shape[1])), self.emb[js]) > self.t

    def _settle_hits(self, lo: int, sure: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                     kept: np.ndarray) -> np.ndarray:
        """`sure` hits plus the maybe pairs (rows[k] of the block, kept row cols[k]) that the exact test finds
        near, for rows not already hit."""
        todo = ~sure[rows]
        rows, cols = rows[todo], cols[todo]
        if len(rows):
            near = exact_sims(self.emb[lo + rows], kept[cols]) > self.t
            sure = sure.copy()
            sure[rows[near]] = True
        return sure

    def hits(self, lo: int, hi: int) -> np.ndarray:
        s = self.emb[lo:hi] @ self.kept[:self.n].T
        cand = np.nonzero((s > self.maybe_above).any(1))[0]  # one pass over s; few rows are near anything
        sub = s[cand]
        sure = np.zeros(hi - lo, dtype=bool)
        sure[cand] = (sub > self.sure_above).any(1)
        rows, cols = np.nonzero((sub > self.maybe_above) & (sub <= self.sure_above))
        return self._settle_hits(lo, sure, cand[rows], cols, self.kept[:self.n])

    def pairs(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        x = self.emb[lo:hi]
        s = x @ x.T
        upper = np.triu(np.ones(s.shape, dtype=bool), 1)
        sure = (s > self.sure_above) & upper
        return sure, (s > self.maybe_above) & ~sure & upper

    def keep(self, lo: int, pos: np.ndarray) -> None:
        if self.n + len(pos) > len(self.kept):
            grown = np.empty((max(2 * len(self.kept), self.n + len(pos)), self.kept.shape[1]), dtype=np.float32)
            grown[:self.n] = self.kept[:self.n]
            self.kept = grown
        self.kept[self.n:self.n + len(pos)] = self.emb[lo + pos]
        self.n += len(pos)


class TorchSemanticNear(SemanticNear):
    """The same test with the similarity blocks as torch matmuls on `device` (full float32: TF32 off); each
    block is moved there once, kept rows stay there. Only the hit flags and the maybe pairs come back."""

    def __init__(self, emb: np.ndarray, threshold: float, block: int, device: str):
        super().__init__(emb, threshold, block)
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.kept_dev = torch.empty((0, self.kept.shape[1]), dtype=torch.float32, device=self.device)
        self.block_dev: tuple[int, object] | None = None

    @contextlib.contextmanager
    def session(self):
        before = self.torch.get_float32_matmul_precision()
        self.torch.set_float32_matmul_precision("highest")  # TF32 would void the error bound
        try:
            yield
        finally:
            self.torch.set_float32_matmul_precision(before)

    def _block(self, lo: int, hi: int):
        if self.block_dev is None or self.block_dev[0] != lo:
            self.block_dev = (lo, self.torch.from_numpy(self.emb[lo:hi]).to(self.device))
        return self.block_dev[1]

    def hits(self, lo: int, hi: int) -> np.ndarray:
        s = self._block(lo, hi) @ self.kept_dev[:self.n].T
        sure = (s > float(self.sure_above)).any(1)
        maybe = (s > float(self.maybe_above)) & (s <= float(self.sure_above)) & ~sure[:, None]
        rows, cols = (t.cpu().numpy() for t in maybe.nonzero(as_tuple=True))
        return self._settle_hits(lo, sure.cpu().numpy(), rows, cols, self.kept[:self.n])

    def pairs(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        x = self._block(lo, hi)
        s = x @ x.T
        upper = self.torch.ones(s.shape, dtype=self.torch.bool, device=self.device).triu(1)
        sure = (s > float(self.sure_above)) & upper
        maybe = (s > float(self.maybe_above)) & ~sure & upper
        return sure.cpu().numpy(), maybe.cpu().numpy()

    def keep(self, lo: int, pos: np.ndarray) -> None:
        super().keep(lo, pos)  # the host copy feeds the exact test
        if len(self.kept_dev) < len(self.kept):
            grown = self.torch.empty((len(self.kept), self.kept.shape[1]), dtype=self.torch.float32,
                                     device=self.device)
            grown[:self.n - len(pos)] = self.kept_dev[:self.n - len(pos)]
            self.kept_dev = grown
        idx = self.torch.from_numpy(pos).to(self.device)
        self.kept_dev[self.n - len(pos):self.n] = self._block(lo, lo + 1)[idx]


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
