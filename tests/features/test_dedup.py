"""Greedy per-cluster de-dup and the cap solver on hand-computed cases."""

from __future__ import annotations

import numpy as np

from clipdistill.features.dedup import exact_sims, greedy_dedup, hash_dedup, solve_cap


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


def _planted(m: int, d: int, seed: int) -> np.ndarray:
    """Unit rows around one centre (a cluster), 20% of them near-copies of an earlier row, walk order shuffled."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d) + rng.standard_normal((m, d)).astype(np.float32) / np.sqrt(d)
    dup = rng.choice(np.arange(1, m), m // 5, replace=False)
    x[dup] = x[rng.integers(0, dup)] + 0.05 * rng.standard_normal((len(dup), d)) / np.sqrt(d)
    x = x[rng.permutation(m)]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def test_torch_blocks_keep_exactly_what_numpy_keeps():
    """The torch path (forced on CPU here; on CUDA in `balance --device cuda`) keeps the same positions as numpy,
    across thresholds, caps and block sizes."""
    emb = _planted(700, 64, 0)
    for threshold in (0.5, 0.9, 0.99):
        for cap, block in ((None, 2048), (None, 64), (150, 100)):
            ref = greedy_dedup(emb, threshold, cap, block)
            assert 0 < len(ref) < len(emb)
            assert greedy_dedup(emb, threshold, cap, block, device="cpu").tolist() == ref.tolist()


def test_ties_are_decided_by_the_exact_cosine_on_every_backend():
    """A threshold equal to a planted pair's float32 cosine: the pair is not above it (kept), and one float32
    step below it the pair is a duplicate (dropped), whatever the matmul's last bits were."""
    emb = _planted(300, 512, 1)
    i, j = 3, 4
    emb[j] = emb[i] + 1e-3 * emb[j]
    emb[j] /= np.linalg.norm(emb[j])
    tie = float(exact_sims(emb[[i]], emb[[j]])[0])
    assert abs(tie - float(emb[i].astype(np.float64) @ emb[j])) < 1e-7
    below = float(np.nextafter(np.float32(tie), np.float32(-1)))
    for device in (None, "cpu"):
        assert j in greedy_dedup(emb, tie, device=device)
        assert j not in greedy_dedup(emb, below, device=device)
        assert j not in greedy_dedup(emb, below, block=4, device=device)  # i and j in one block, then across blocks
    assert greedy_dedup(emb, tie).tolist() == greedy_dedup(emb, tie, device="cpu").tolist()
    assert greedy_dedup(emb, below).tolist() == greedy_dedup(emb, below, device="cpu").tolist()


def test_exact_sims_matches_a_correctly_rounded_sum():
    import math

    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((50, 513)).astype(np.float32) for _ in range(2))
    ref = [np.float32(math.fsum(p)) for p in a.astype(np.float64) * b.astype(np.float64)]
    assert exact_sims(a, b).tolist() == ref
