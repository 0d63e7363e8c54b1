"""Greedy per-cluster de-dup and the cap solver on hand-computed cases."""

from __future__ import annotations

import numpy as np

from clipdistill.features.dedup import greedy_dedup, hash_dedup, solve_cap


def test_chain_keeps_both_ends():
    # A ~ B ~ C but A and C are orthogonal: greedy keeps A, drops B (close to kept A), keeps C (B was dropped)
    a, c = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    emb = np.stack([a, (a + c) / np.sqrt(2), c]).astype(np.float32)
    assert greedy_dedup(emb, 0.7).tolist() == [0, 2]
    assert greedy_dedup(emb, 0.7, block=1).tolist() == [0, 2]  # across block boundaries too
    assert greedy_dedup(emb, 0.71).tolist() == [0, 1, 2]  # cos(A, B) = 0.7071 is not above 0.71
    assert greedy_dedup(emb, 0.7, cap=1).tolist() == [0]


def test_blocking_does_not_change_the_result():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 8))
    emb = np.concatenate([base, base[rng.integers(0, 40, 60)] + 0.05 * rng.standard_normal((60, 8))])
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    emb = emb[rng.permutation(len(emb))]
    full = greedy_dedup(emb, 0.98)
    assert greedy_dedup(emb, 0.98, block=7).tolist() == full.tolist()
    assert greedy_dedup(emb, 0.98, cap=10, block=7).tolist() == full[:10].tolist()
    # what is kept has no pair above the threshold, and everything dropped is close to something kept
    kept = emb[full]
    sims = kept @ kept.T - 2 * np.eye(len(kept))
    assert sims.max() <= 0.98
    dropped = np.setdiff1d(np.arange(len(emb)), full)
    assert ((emb[dropped] @ kept.T).max(1) > 0.98).all()


def test_solve_cap():
    sizes = np.array([10, 5, 1])
    assert solve_cap(sizes, 12) == 6  # 6 + 5 + 1
    assert solve_cap(sizes, 16) == 10  # no cap bites
    assert solve_cap(sizes, 3) == 1  # never below one per cluster


def test_hash_dedup_counts_differing_bits():
    # at distance 1: 0b000 kept; 0b001 is 1 bit from it: dropped; 0b011 is 2 bits from 0b000 (the dropped 0b001
    # does not count): kept; the top bit alone is 1 bit from 0b000: dropped; 0b111 is 1 bit from 0b011: dropped
    h = np.array([0b000, 0b001, 0b011, 1 << 63, 0b111], dtype=np.uint64)
    assert hash_dedup(h, 1).tolist() == [0, 2]
    assert hash_dedup(h, 1, block=2).tolist() == [0, 2]  # across block boundaries too
    assert hash_dedup(h, 0).tolist() == [0, 1, 2, 3, 4]  # all distinct
    assert hash_dedup(np.array([5, 5, 5], dtype=np.uint64), 0).tolist() == [0]  # identical hashes
    assert hash_dedup(h, 64).tolist() == [0]
